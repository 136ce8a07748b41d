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

Exactly-once launching: ``schedule()``, ``cancel()``, ``resume()`` and the worker's status updates hold an
exclusive ``fcntl`` lock on ``ROOT/.lock`` while they read and rewrite status files, so two processes that
schedule at the same moment (the app's refresh, the CLI, a worker that just finished) never both launch one
queued run. A pid in status.json is trusted only together with the process's start time (``/proc/PID/stat``,
field 22) recorded at launch and a command line naming the worker and its run; a pid reused by another
process is never reported as running and never signalled.

Reading is forgiving: a status.json or config.json that is not a JSON object, metric lines that are not
objects or carry a non-integer iteration are reported (state ``failed`` with the reason) or skipped, never
a traceback; a missing or corrupted config.json stops resume and the worker with a message instead of
training the defaults.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import atomic_write_bytes, open_regular, read_regular_file
from ..errors import LSR1Error
from ..train import config_from_preset
from ..hmr.presets import HMR_PRESETS, hmr_preset
from ..hmr.train import HMRProblem, HMRTrainConfig
from ..meta.presets import TrainConfig
from ..meta.train import (MAX_RUN_JSON_BYTES, LSR1Problem, Trainer, as_integer, check_latest_present,
                          read_metric_records)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: no cross-process lock
    fcntl = None

STATES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
# \Z, not $: '$' also matches before a trailing newline, so 'x\n' was accepted as a run id
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\Z")


def valid_run_id(run_id) -> bool:
    return isinstance(run_id, str) and _ID_RE.match(run_id) is not None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _proc_start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (/proc/PID/stat field 22); None if the
    process does not exist, is a zombie, or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] == b"Z":
        return None
    try:
        return int(fields[19])  # fields[0] is field 3 (state); field 22 is starttime
    except (IndexError, ValueError):
        return None


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return None


def _as_pid(pid) -> int | None:
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _pid_alive(pid, start_time=None, run_dir: Path | None = None) -> bool:
    """Whether ``pid`` is still the worker that status.json names.

    With /proc: the process must exist, not be a zombie, have the recorded start time (when one was
    recorded) and a command line that runs this package's worker on ``run_dir`` (when given). Without
    /proc (not Linux), only existence is checked."""
    pid = _as_pid(pid)
    if pid is None:
        return False
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    started = _proc_start_time(pid)
    if started is None:
        return False
    if isinstance(start_time, int) and not isinstance(start_time, bool) and started != start_time:
        return False  # the pid was reused by a newer process
    if run_dir is not None:
        cmd = _proc_cmdline(pid)
        if cmd is None or "lsr1_core.runs" not in cmd or "_worker" not in cmd:
            return False
        i = cmd.index("_worker")
        if i + 1 >= len(cmd):
            return False
        # the worker's run directory, resolved in the worker's own working directory, must be this one: a run
        # copied into another runs root (same name, same pid in its status.json) is not this worker's
        arg = cmd[i + 1]
        if not os.path.isabs(arg):
            try:
                arg = os.path.join(os.readlink(f"/proc/{pid}/cwd"), arg)
            except OSError:
                return False
        if os.path.realpath(arg) != os.path.realpath(run_dir):
            return False
    return True


@contextlib.contextmanager
def _root_lock(root: Path):
    """An exclusive lock for everything that reads and rewrites status files under ``root``."""
    if fcntl is None:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _log_tail(path: Path) -> str:
    """The last line of the run's log.txt (its last 4 kB only; a FIFO or device named log.txt is not read)."""
    try:
        fd = open_regular(path / "log.txt")
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - 4096), os.SEEK_SET)
        data = os.read(fd, 4096)
    except OSError:
        return ""
    finally:
        os.close(fd)
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1][-300:] if lines else ""


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when the file is missing, unreadable, not a regular file (a FIFO
    named status.json must never block a reader holding the runs root's lock), larger than 16 MB, not JSON or
    not an object."""
    try:
        obj = json.loads(read_regular_file(path, MAX_RUN_JSON_BYTES).decode())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def json_problem(path: Path) -> str:
    """Why :func:`read_json` gave None for ``path`` (for messages)."""
    try:
        obj = json.loads(read_regular_file(path, MAX_RUN_JSON_BYTES).decode())
    except FileNotFoundError:
        return "is missing"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "is corrupted (not JSON)"
    return f"is corrupted (a JSON {type(obj).__name__}, not an object)" if not isinstance(obj, dict) else "is fine"


# What a run trains: its config class → the meta-training problem (and the kind shown on the page)
PROBLEMS = {TrainConfig: LSR1Problem, HMRTrainConfig: HMRProblem}
KINDS = {TrainConfig: "lsr1", HMRTrainConfig: "hmr"}


def config_class_of(d: dict) -> type:
    """The config class of a run's config.json: HMR trainings are the ones with a ``stage`` (initializer or
    update); every other run is an L-SR1 meta-training (TrainConfig)."""
    return HMRTrainConfig if "stage" in d else TrainConfig


def preset_config(name: str, overrides: dict | None = None):
    """A run's config from a preset name: an L-SR1 preset (``lsr1_core.meta.presets``) or an HMR one
    (``lsr1_core.hmr.presets``: update-stage trainings on the shipped initializer)."""
    if name in HMR_PRESETS:
        try:
            return hmr_preset(name, **(overrides or {}))
        except LSR1Error:
            raise
        except (TypeError, AttributeError, OverflowError) as e:
            raise LSR1Error(f"invalid setting for HMR preset {name!r}: {e}") from None
    return config_from_preset(name, overrides or {})


def read_config(path: Path) -> TrainConfig | HMRTrainConfig:
    """The run's validated config (TrainConfig or HMRTrainConfig); ``LSR1Error`` (never the defaults) when
    config.json is missing or bad."""
    cfg_path = Path(path) / "config.json"
    if not cfg_path.exists():
        raise LSR1Error(f"run {Path(path).name} has no config.json; it cannot be resumed (start a new run)")
    d = read_json(cfg_path)
    if d is None:
        raise LSR1Error(f"{cfg_path} {json_problem(cfg_path)}; it cannot be resumed (start a new run)")
    try:
        return config_class_of(d).from_dict(d)
    except LSR1Error as e:
        raise LSR1Error(f"{cfg_path} is not a valid training config: {e}") from None
    except (TypeError, AttributeError, OverflowError, RecursionError) as e:
        raise LSR1Error(f"{cfg_path} is not a valid training config ({type(e).__name__}: {e})") from None


def _as_float(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
        return f if math.isfinite(f) else None
    return None


def write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All complete metric records of a run: UTF-8 JSON objects with an integer ``iteration`` (a line cut by
    a crash, or any other line, is skipped). [] when metrics.jsonl is missing, not a regular file (a FIFO
    never blocks this read) or larger than 256 MB."""
    try:
        return read_metric_records(run_dir)
    except OSError:
        return []


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
    kind: str = "lsr1"  # "lsr1" (an L-SR1 meta-training) or "hmr" (human mesh recovery; val_loss is PA-MPJPE)

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
        if self.root.exists() and not self.root.is_dir():
            raise LSR1Error(f"the runs root {self.root} is not a directory; give --root a directory (or a path "
                            "that does not exist yet)")
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

    def new_id(self, cfg: TrainConfig | HMRTrainConfig, preset_name: str | None) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{preset_name or getattr(cfg, 'task', None) or 'hmr_' + cfg.method}"
        rid, i = base, 1
        while (self.root / rid).exists():
            i += 1
            rid = f"{base}-{i}"
        return rid

    def start(self, cfg: TrainConfig | HMRTrainConfig, *, preset_name: str | None = None, run_id: str | None = None,
              launch: bool = True) -> str:
        """Create a run (queued) and launch it if a slot is free. Returns its id."""
        if type(cfg) not in PROBLEMS:
            raise LSR1Error("start() needs a validated TrainConfig or HMRTrainConfig (see lsr1_core.meta.preset, "
                            "lsr1_core.hmr.presets.hmr_preset)")
        self._check_writable()
        auto = run_id is None
        run_id = run_id if run_id is not None else self.new_id(cfg, preset_name)
        if not valid_run_id(run_id):
            raise LSR1Error(f"run id {run_id!r} may only use letters, digits, '_', '.', '-' (at most 81 characters, "
                            "starting with a letter or digit)")
        for attempt in range(100):
            path = self.root / run_id
            try:
                path.mkdir(parents=False, exist_ok=False)
                break
            except FileExistsError:
                if not auto:
                    raise LSR1Error(f"a run named {run_id!r} already exists in {self.root}; resume it or pick "
                                    "another name") from None
                run_id = f"{self.new_id(cfg, preset_name)}-{os.getpid()}-{attempt}"  # a concurrent start took it
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

    def _worker_alive(self, path: Path, st: dict) -> bool:
        return _pid_alive(st.get("pid"), st.get("pid_start"), path)

    def info(self, run_id: str) -> RunInfo:
        """What a run is doing; never raises for damaged files inside an existing run directory."""
        path = self._path(run_id)
        st = read_json(path / "status.json")
        if st is None:
            st = {"state": "failed", "error": "status.json is missing or corrupted (it "
                                              f"{json_problem(path / 'status.json')}); resume the run to rebuild it"}
        state = st.get("state")
        if state not in STATES:
            state, st["error"] = "failed", f"status.json holds an unknown state {state!r}"
        error = st.get("error")
        error = error if isinstance(error, str) or error is None else str(error)
        if state == "running" and not self._worker_alive(path, st) and st.get("cancel_requested") is True:
            state = "cancelled"  # cancelled before the worker could install its SIGTERM handler (issue 24, item 21)
        elif state == "running" and not self._worker_alive(path, st):
            state = "interrupted"
            tail = _log_tail(path)
            error = error or ("the job process ended without reporting" + (f"; its log ends: {tail}" if tail else ""))
        metrics = read_metrics(path)
        last = metrics[-1] if metrics else {}
        vals = [v for v in (_as_float(m.get("val_loss")) for m in metrics) if v is not None]
        cfg = read_json(path / "config.json") or {}
        total = as_integer(cfg.get("iterations"))
        if total is None:
            total = as_integer(st.get("total")) or 0
        created = st.get("created") if isinstance(st.get("created"), str) else None
        preset_name = st.get("preset") if isinstance(st.get("preset"), str) else None
        return RunInfo(run_id=run_id, path=path, state=state, iteration=max(0, last.get("iteration", 0)),
                       total=max(0, total), error=error, created=created,
                       elapsed_s=_as_float(last.get("elapsed_s")) or 0.0,
                       best_val=min(vals) if vals else None, preset=preset_name,
                       kind=KINDS[config_class_of(cfg)])

    def list(self) -> list[RunInfo]:
        if not self.root.exists():
            return []
        out = []
        try:
            entries = sorted(self.root.iterdir())
        except OSError as e:
            raise LSR1Error(f"cannot list the runs root {self.root}: {e.strerror or e}") from None
        for path in entries:
            # every run directory (one with a config or a status file), damaged ones included (shown as failed);
            # a directory with a config but no status yet is being created by start() unless it is old
            if not (valid_run_id(path.name) and path.is_dir()):
                continue
            if not (path / "status.json").exists():
                try:
                    if time.time() - (path / "config.json").stat().st_mtime < 60:
                        continue
                except OSError:
                    continue
            try:
                out.append(self.info(path.name))
            except LSR1Error:
                continue
        return out

    def _path(self, run_id: str) -> Path:
        if not valid_run_id(run_id):
            raise LSR1Error(f"invalid run id {run_id!r}")
        path = self.root / run_id
        if not path.is_dir():
            raise LSR1Error(f"no run {run_id!r} in {self.root} (it may have been deleted)")
        return path

    # --- controlling ------------------------------------------------------------
    def running(self) -> list[RunInfo]:
        return [r for r in self.list() if r.state == "running"]

    def schedule(self) -> list[str]:
        """Launch queued runs (oldest first) while fewer than max_concurrent are running.

        Holds the runs root's lock from reading the states to writing the launched runs' status, so
        concurrent calls (other processes included) launch each queued run exactly once."""
        if not self.root.exists():
            return []
        launched = []
        with _root_lock(self.root):
            self._remove_stale_temporaries()
            runs = self.list()
            free = self.max_concurrent - sum(r.state == "running" for r in runs)
            for r in runs:
                if free <= 0:
                    break
                if r.state == "queued":
                    try:
                        self._launch(r.path)
                    except (OSError, LSR1Error) as e:  # e.g. a full disk: this run fails, the others go on
                        st = read_json(r.path / "status.json") or {}
                        st.update(state="failed", pid=None, error=f"could not start the job process: {e}")
                        try:
                            write_json(r.path / "status.json", st)
                        except OSError:
                            pass
                        continue
                    launched.append(r.run_id)
                    free -= 1
        return launched

    def _remove_stale_temporaries(self, age_s: float = 120.0) -> None:
        """Delete ``.status.json.*.tmp`` / ``.config.json.*.tmp`` files older than ``age_s`` in the run
        directories: what a process killed (SIGKILL) in the middle of an atomic write leaves behind. Called
        under the lock, so no status write is in flight; the age spares a start() writing right now."""
        now = time.time()
        for pattern in ("*/.status.json.*.tmp", "*/.config.json.*.tmp"):
            for tmp in self.root.glob(pattern):
                try:
                    if now - tmp.lstat().st_mtime > age_s:
                        tmp.unlink()
                except OSError:
                    pass

    def _launch(self, path: Path) -> int:
        """Start the worker of a queued run. status.json says ``running`` *before* the process is spawned,
        so a status file that cannot be written (a full disk) spawns nothing, and a run whose status cannot
        be updated afterwards is never left ``queued`` with a live worker (the next schedule() would spawn
        a second one, issue 24 item 4): that worker is killed."""
        st = self._status(path)
        env = dict(os.environ, LSR1_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
        run_path = os.path.abspath(path)  # the worker's command line names the run by its absolute path
        cmd = [self.python, "-m", "lsr1_core.runs", "--root", os.path.abspath(self.root),
               "--max-concurrent", str(self.max_concurrent), "_worker", run_path]
        st.update(state="running", pid=None, pid_start=None, launching=_now(), error=None)
        write_json(path / "status.json", st)  # raises on a full disk: nothing was spawned
        fd = open_regular(path / "log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # never a FIFO
        try:
            proc = subprocess.Popen(cmd, stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env, cwd=os.getcwd())
        finally:
            os.close(fd)
        st.update(state="running", pid=proc.pid, pid_start=_proc_start_time(proc.pid), started=_now(), error=None)
        try:
            write_json(path / "status.json", st)
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the worker leads its own group
            except OSError:
                pass
            proc.wait()
            raise
        return proc.pid

    def cancel(self, run_id: str, wait: float = 0.0) -> str:
        """Ask a running job to checkpoint and stop (SIGTERM); a queued job is cancelled at once."""
        path = self._path(run_id)
        with _root_lock(self.root):
            info = self.info(run_id)
            if info.state == "queued":
                st = self._status(path)
                st.update(state="cancelled", error=None)
                write_json(path / "status.json", st)
                return "cancelled"
            if info.state != "running":
                raise LSR1Error(f"run {run_id} is {info.state}; only queued or running runs can be cancelled")
            st = self._status(path)
            if self._worker_alive(path, st):  # checked again right before the signal: never a reused pid
                # recorded first: a worker still starting (no SIGTERM handler yet) dies of the signal and is
                # then reported cancelled, not interrupted; one that has not yet marked itself running stops
                st["cancel_requested"] = True
                write_json(path / "status.json", st)
                try:
                    os.kill(st["pid"], signal.SIGTERM)
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
        with _root_lock(self.root):
            info = self.info(run_id)
            if info.state in ("running", "queued"):
                raise LSR1Error(f"run {run_id} is already {info.state}")
            cfg = read_config(path)  # a missing or corrupted config is an error, never the defaults
            check_latest_present(path)  # a run that had progressed never starts over (issue 24, item 1)
            if iterations is not None:
                if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
                    raise LSR1Error(f"iterations must be a positive integer, got {iterations!r}")
                if iterations < info.iteration:
                    raise LSR1Error(f"cannot resume to {iterations} iterations: the run is already at {info.iteration}")
                write_json(path / "config.json", cfg.replace(iterations=iterations).to_dict())
            st = read_json(path / "status.json") or {"created": _now(), "preset": info.preset}
            st.pop("cancel_requested", None)
            st.update(state="queued", pid=None, pid_start=None, error=None, resumed=_now(),
                      total=iterations if iterations is not None else cfg.iterations)
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
    path = Path(run_dir)
    status_path = path / "status.json"
    lock_root = Path(root) if root else path.parent
    trainer = None

    def on_term(signum, frame):
        if trainer is not None:
            trainer.request_stop()
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    state, error, st = "failed", None, {}
    try:
        with _root_lock(lock_root):
            st = read_json(status_path) or {}
            if st.get("cancel_requested") is True:  # cancel() came before this process could take the signal
                raise KeyboardInterrupt
            st.update(state="running", pid=os.getpid(), pid_start=_proc_start_time(os.getpid()), error=None)
            write_json(status_path, st)
        cfg = read_config(path)  # never the defaults for a missing or corrupted config (this message names the run)
        # config.json is in place: a run not started yet resumes from iteration 0, as one killed before its
        # first checkpoint does
        trainer = Trainer.resume(path, problem=PROBLEMS[type(cfg)])
        res = trainer.fit(progress=False, fresh=False)
        state = "cancelled" if trainer.stop_requested and res.iterations < trainer.cfg.iterations else "finished"
    except KeyboardInterrupt:
        state = "cancelled"
    except Exception as e:  # the error goes to status.json for the page and the CLI
        error = f"{type(e).__name__}: {e}"
        print(error, file=sys.stderr)
    with _root_lock(lock_root):
        st = read_json(status_path) or st
        st.update(state=state, error=error, ended=_now(), pid=os.getpid())
        write_json(status_path, st)
    if root:
        try:
            RunManager(root, max_concurrent=max_concurrent).schedule()
        except Exception:
            pass
    return 0 if state != "failed" else 1
