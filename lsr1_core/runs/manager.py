"""The job runner: run directories, status files, worker processes, queueing, cancel and resume.

A run directory holds
    config.json     the validated TrainConfig (written once, before the job starts)
    status.json     {"state": queued|running|finished|failed|cancelled, "pid", "error", ...}
    metrics.jsonl   one JSON object per meta-iteration (the trainer's)
    latest.*, best.*  checkpoints (crash-safe: see checkpoints.save_tensors_and_card(versioned=True))
    log.txt         the worker's stdout and stderr
Every file is written by temp-file + fsync + rename, so a worker killed with SIGKILL at any moment leaves a
directory that loads and resumes, losing at most the work since its last checkpoint. A run whose status says
running but whose process is gone is reported as ``interrupted`` and can be resumed.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import atomic_write_bytes
from ..errors import LSR1Error
from ..meta.presets import TrainConfig

STATES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _log_tail(path: Path) -> str:
    try:
        lines = (path / "log.txt").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All complete metric records of a run (a line cut by a crash is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    out = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


@dataclass
class RunInfo:
    run_id: str
    path: Path
    state: str
    iteration: int
    total: int
    error: str | None
    created: str | None
    elapsed_s: float
    best_val: float | None
    preset: str | None

    @property
    def progress(self) -> float:
        return min(1.0, self.iteration / self.total) if self.total else 0.0

    @property
    def remaining_s(self) -> float | None:
        if self.iteration <= 0 or self.state != "running":
            return None
        return self.elapsed_s / self.iteration * max(0, self.total - self.iteration)


class RunManager:
    def __init__(self, root: str | Path = "runs/jobs", max_concurrent: int = 1, python: str | None = None):
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise LSR1Error(f"max_concurrent must be a positive integer, got {max_concurrent!r}")
        self.root = Path(root)
        self.max_concurrent = max_concurrent
        self.python = python or sys.executable

    # --- creating ---------------------------------------------------------------
    def _check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise LSR1Error(f"cannot write to the runs directory {self.root}: {e.strerror or e}") from None

    def new_id(self, cfg: TrainConfig, preset_name: str | None) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{preset_name or cfg.task}"
        rid, i = base, 1
        while (self.root / rid).exists():
            i += 1
            rid = f"{base}-{i}"
        return rid

    def start(self, cfg: TrainConfig, *, preset_name: str | None = None, run_id: str | None = None,
              launch: bool = True) -> str:
        """Create a run (queued) and launch it if a slot is free. Returns its id."""
        if not isinstance(cfg, TrainConfig):
            raise LSR1Error("start() needs a validated TrainConfig (see lsr1_core.meta.preset)")
        self._check_writable()
        run_id = run_id or self.new_id(cfg, preset_name)
        if not _ID_RE.match(run_id):
            raise LSR1Error(f"run id {run_id!r} may only use letters, digits, '_', '.', '-'")
        path = self.root / run_id
        try:
            path.mkdir(parents=False, exist_ok=False)
        except FileExistsError:
            raise LSR1Error(f"a run named {run_id!r} already exists in {self.root}; resume it or pick another name") from None
        write_json(path / "config.json", cfg.to_dict())
        write_json(path / "status.json", {"state": "queued", "created": _now(), "preset": preset_name,
                                          "iteration": 0, "total": cfg.iterations, "pid": None, "error": None})
        if launch:
            self.schedule()
        return run_id

    # --- reading ----------------------------------------------------------------
    def _status(self, path: Path) -> dict:
        st = read_json(path / "status.json")
        if st is None:
            raise LSR1Error(f"run {path.name} has a missing or corrupted status.json")
        return st

    def info(self, run_id: str) -> RunInfo:
        path = self._path(run_id)
        st = self._status(path)
        state = st.get("state", "failed")
        error = st.get("error")
        if state == "running" and not _pid_alive(st.get("pid")):
            state = "interrupted"
            tail = _log_tail(path)
            error = error or ("the job process ended without reporting" + (f"; its log ends: {tail}" if tail else ""))
        metrics = read_metrics(path)
        last = metrics[-1] if metrics else {}
        vals = [m["val_loss"] for m in metrics if isinstance(m.get("val_loss"), (int, float))]
        cfg = read_json(path / "config.json") or {}
        return RunInfo(run_id=run_id, path=path, state=state, iteration=int(last.get("iteration", 0)),
                       total=int(cfg.get("iterations", st.get("total", 0)) or 0), error=error,
                       created=st.get("created"), elapsed_s=float(last.get("elapsed_s", 0.0) or 0.0),
                       best_val=min(vals) if vals else None, preset=st.get("preset"))

    def list(self) -> list[RunInfo]:
        if not self.root.exists():
            return []
        out = []
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and (path / "status.json").exists():
                try:
                    out.append(self.info(path.name))
                except LSR1Error:
                    continue
        return out

    def _path(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not _ID_RE.match(run_id):
            raise LSR1Error(f"invalid run id {run_id!r}")
        path = self.root / run_id
        if not path.is_dir():
            raise LSR1Error(f"no run {run_id!r} in {self.root} (it may have been deleted)")
        return path

    # --- controlling ------------------------------------------------------------
    def running(self) -> list[RunInfo]:
        return [r for r in self.list() if r.state == "running"]

    def schedule(self) -> list[str]:
        """Launch queued runs (oldest first) while fewer than max_concurrent are running."""
        launched = []
        runs = self.list()
        free = self.max_concurrent - sum(r.state == "running" for r in runs)
        for r in runs:
            if free <= 0:
                break
            if r.state == "queued":
                self._launch(r.path)
                launched.append(r.run_id)
                free -= 1
        return launched

    def _launch(self, path: Path) -> int:
        st = self._status(path)
        log = open(path / "log.txt", "ab")
        env = dict(os.environ, LSR1_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
        cmd = [self.python, "-m", "lsr1_core.runs", "--root", str(self.root),
               "--max-concurrent", str(self.max_concurrent), "_worker", str(path)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=os.getcwd())
        log.close()
        st.update(state="running", pid=proc.pid, started=_now(), error=None)
        write_json(path / "status.json", st)
        return proc.pid

    def cancel(self, run_id: str, wait: float = 0.0) -> str:
        """Ask a running job to checkpoint and stop (SIGTERM); a queued job is cancelled at once."""
        path = self._path(run_id)
        st = self._status(path)
        info = self.info(run_id)
        if info.state == "queued":
            st.update(state="cancelled", error=None)
            write_json(path / "status.json", st)
            return "cancelled"
        if info.state != "running":
            raise LSR1Error(f"run {run_id} is {info.state}; only queued or running runs can be cancelled")
        try:
            os.kill(int(st["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + wait
        while wait and time.time() < deadline:
            if self.info(run_id).state != "running":
                break
            time.sleep(0.1)
        return self.info(run_id).state

    def resume(self, run_id: str, iterations: int | None = None) -> str:
        """Queue a cancelled, failed, interrupted or finished run again from its latest checkpoint."""
        path = self._path(run_id)
        info = self.info(run_id)
        if info.state in ("running", "queued"):
            raise LSR1Error(f"run {run_id} is already {info.state}")
        if iterations is not None:
            cfg = TrainConfig.from_dict(read_json(path / "config.json") or {})
            if iterations < info.iteration:
                raise LSR1Error(f"cannot resume to {iterations} iterations: the run is already at {info.iteration}")
            write_json(path / "config.json", cfg.replace(iterations=iterations).to_dict())
        st = self._status(path)
        st.update(state="queued", pid=None, error=None, resumed=_now())
        write_json(path / "status.json", st)
        self.schedule()
        return self.info(run_id).state

    def wait(self, run_id: str, timeout: float = 600.0, poll: float = 0.2) -> RunInfo:
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.info(run_id)
            if info.state not in ("running", "queued"):
                return info
            time.sleep(poll)
        raise TimeoutError(f"run {run_id} still {self.info(run_id).state} after {timeout} s")


def worker(run_dir: str, root: str | None = None, max_concurrent: int = 1) -> int:
    """Body of a job process: train, keep status.json current, checkpoint on SIGTERM."""
    from ..meta.train import Trainer

    path = Path(run_dir)
    status_path = path / "status.json"
    st = read_json(status_path) or {}
    st.update(state="running", pid=os.getpid(), error=None)
    write_json(status_path, st)
    trainer = None

    def on_term(signum, frame):
        if trainer is not None:
            trainer.request_stop()
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    state, error = "failed", None
    try:
        cfg = TrainConfig.from_dict(read_json(path / "config.json") or {})
        if (path / "latest.json").exists():
            trainer = Trainer.resume(path)
        else:
            trainer = Trainer(cfg, path)
            trainer._prepare_dir(fresh=False)  # config.json is already in place
        res = trainer.fit(progress=False, fresh=False)
        state = "cancelled" if trainer._stop and res.iterations < trainer.cfg.iterations else "finished"
    except KeyboardInterrupt:
        state = "cancelled"
    except Exception as e:  # the error goes to status.json for the page and the CLI
        error = f"{type(e).__name__}: {e}"
        print(error, file=sys.stderr)
    st = read_json(status_path) or st
    st.update(state=state, error=error, ended=_now(), pid=os.getpid())
    write_json(status_path, st)
    if root:
        try:
            RunManager(root, max_concurrent=max_concurrent).schedule()
        except Exception:
            pass
    return 0 if state != "failed" else 1
