"""The job runner: run directories, status files, worker processes, queueing, cancel and resume.

A run directory holds
    config.json     the validated config, with its problem kind ({"problem": "lsr1", ...}: lsr1_core.meta.registry)
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

The manager knows no problem: a config's kind, class, Trainer problem and presets come from
``lsr1_core.meta.registry``. Where a worker runs is a backend (``backends.py``: local processes by default,
SLURM jobs through submitit), recorded in status.json. Each worker also writes TensorBoard event files beside
metrics.jsonl (``tensorboard.py``).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import open_regular
from ..errors import LSR1Error
from ..meta import registry
from ..meta.registry import as_integer, check_latest_present
from .backends import LocalBackend, backend_of, make_backend, proc_start_time
from .files import (STATES, as_float, json_problem, lock_held_elsewhere, log_tail, now as _now, read_json,
                    read_metrics, root_lock, valid_run_id, write_json)
from .tensorboard import EventLog

__all__ = ["STATES", "RunInfo", "RunManager", "json_problem", "preset_config", "read_config", "read_json",
           "read_metrics", "valid_run_id", "worker", "write_json"]


def preset_config(name: str, overrides: dict | None = None):
    """A run's config from a preset name of any registered problem kind (``lsr1_core.meta.registry``)."""
    return registry.preset_config(name, overrides)


def read_config(path: Path):
    """The run's validated config, of the kind its config.json records; ``LSR1Error`` (never the defaults) when
    config.json is missing or bad."""
    return registry.read_run_config(path)


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
    kind: str = "lsr1"  # the problem kind (lsr1_core.meta.registry): "lsr1", "hmr" (val_loss is PA-MPJPE), ...
    backend: str = "local"  # where the worker runs (lsr1_core.runs.backends): "local" or "slurm"

    @property
    def progress(self) -> float:
        return min(1.0, self.iteration / self.total) if self.total else 0.0

    @property
    def remaining_s(self) -> float | None:
        if self.iteration <= 0 or self.state != "running":
            return None
        return self.elapsed_s / self.iteration * max(0, self.total - self.iteration)


class RunManager:
    """Runs under ``root``. ``backend``: where the runs this manager *starts* execute ("local" or "slurm",
    or a Backend; each run keeps its own in status.json, so scheduling launches every queued run on the
    backend it was started for). ``launch_only``: schedule() launches only queued runs of that backend (a
    SLURM worker that just ended never starts a local process on its compute node)."""

    def __init__(self, root: str | Path = "runs/jobs", max_concurrent: int = 1, python: str | None = None,
                 backend=None, launch_only: str | None = None):
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise LSR1Error(f"max_concurrent must be a positive integer, got {max_concurrent!r}")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise LSR1Error(f"the runs root {self.root} is not a directory; give --root a directory (or a path "
                            "that does not exist yet)")
        self.max_concurrent = max_concurrent
        self.python = python or sys.executable
        self.backend = backend if hasattr(backend, "submit") else make_backend(backend)
        self.launch_only = launch_only
        self._local = LocalBackend()  # kept: it waits for a worker it had to kill
        self._lock_held = 0  # > 0 inside _locked(): no launch can be in progress then

    # --- creating ---------------------------------------------------------------
    def _check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise LSR1Error(f"cannot write to the runs directory {self.root}: {e.strerror or e}") from None

    def new_id(self, cfg, preset_name: str | None) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{preset_name or registry.kind_of_config(cfg).run_name(cfg)}"
        rid, i = base, 1
        while (self.root / rid).exists():
            i += 1
            rid = f"{base}-{i}"
        return rid

    def start(self, cfg, *, preset_name: str | None = None, run_id: str | None = None, launch: bool = True) -> str:
        """Create a run (queued) on this manager's backend and launch it if a slot is free. Returns its id.
        ``cfg``: a validated config of a registered problem kind (``lsr1_core.meta.registry``)."""
        config = registry.config_to_dict(cfg)  # LSR1Error for a config of no registered kind
        self.backend.check()  # a backend that cannot launch here (no submitit, no SLURM) is said before a run exists
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
        write_json(path / "config.json", config)
        status = {"state": "queued", "created": _now(), "preset": preset_name, "iteration": 0,
                  "total": cfg.iterations, "pid": None, "error": None}
        if self.backend.name != "local":  # runs without the key are local (as every run before backends)
            status.update(backend=self.backend.name, backend_options=self.backend.options())
        write_json(path / "status.json", status)
        if launch:
            self.schedule()
        return run_id

    # --- reading ----------------------------------------------------------------
    def _status(self, path: Path) -> dict:
        st = read_json(path / "status.json")
        if st is None:
            raise LSR1Error(f"run {path.name} has a missing or corrupted status.json")
        return st

    def _backend(self, st: dict):
        """The backend a run's status.json names (this manager's own local one for local runs)."""
        b = backend_of(st)
        return self._local if b.name == "local" else b

    @contextlib.contextmanager
    def _locked(self):
        """The runs root's lock, held by this manager (info() then knows no launch is half done)."""
        with root_lock(self.root):
            self._lock_held += 1
            try:
                yield
            finally:
                self._lock_held -= 1

    def _worker_alive(self, path: Path, st: dict) -> bool:
        try:
            backend = self._backend(st)
        except LSR1Error:  # a damaged backend entry: only a local worker can be recognised
            backend = self._local
        return backend.alive(path, st)

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
        error = _error_text(st)
        if state == "running" and not self._worker_alive(path, st):
            # Two moments look like a dead worker from outside, and are not: a worker that wrote its final state
            # and exited between the read above and the look at its process (status.json, read again, says so),
            # and a launch in progress (status.json says running before the worker's handle is recorded)
            again = read_json(path / "status.json")
            if again is not None and again.get("state") in STATES and again["state"] != "running":
                st, state, error = again, again["state"], _error_text(again)
            elif not self._lock_held and _launch_in_progress(st) and lock_held_elsewhere(self.root):
                # (launches are made under the runs root's lock: where this manager holds it, or nobody does, a
                # half-done one is a launcher that died; one that never recorded its worker is interrupted after
                # LAUNCH_GRACE_S whoever holds the lock)
                pass
            elif st.get("cancel_requested") is True:
                state = "cancelled"  # cancelled before the worker could install its SIGTERM handler (issue 24, item 21)
            else:
                state = "interrupted"
                tail = log_tail(path)
                error = error or ("the job process ended without reporting"
                                  + (f"; its log ends: {tail}" if tail else ""))
        metrics = read_metrics(path)
        last = metrics[-1] if metrics else {}
        vals = [v for v in (as_float(m.get("val_loss")) for m in metrics) if v is not None]
        cfg = read_json(path / "config.json") or {}
        total = as_integer(cfg.get("iterations"))
        if total is None:
            total = as_integer(st.get("total")) or 0
        created = st.get("created") if isinstance(st.get("created"), str) else None
        preset_name = st.get("preset") if isinstance(st.get("preset"), str) else None
        return RunInfo(run_id=run_id, path=path, state=state, iteration=max(0, last.get("iteration", 0)),
                       total=max(0, total), error=error, created=created,
                       elapsed_s=as_float(last.get("elapsed_s")) or 0.0,
                       best_val=min(vals) if vals else None, preset=preset_name,
                       kind=registry.display_kind(cfg),
                       backend=st.get("backend") if st.get("backend") in ("local", "slurm") else "local")

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
        with self._locked():
            self._remove_stale_temporaries()
            runs = self.list()
            free = self.max_concurrent - sum(r.state == "running" for r in runs)
            for r in runs:
                if free <= 0:
                    break
                if r.state == "queued" and self.launch_only in (None, r.backend):
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

    def _launch(self, path: Path) -> dict:
        """Start the worker of a queued run on its backend. status.json says ``running`` *before* the worker
        is submitted, so a status file that cannot be written (a full disk) starts nothing, and a run whose
        status cannot be updated afterwards is never left ``queued`` with a live worker (the next schedule()
        would start a second one, issue 24 item 4): that worker is killed."""
        st = self._status(path)
        backend = self._backend(st)  # LSR1Error for a damaged backend entry: the run fails, nothing starts
        st.update(state="running", pid=None, pid_start=None, launching=_now(), error=None)
        write_json(path / "status.json", st)  # raises on a full disk: nothing was started
        # the worker names the run by its absolute path
        handle = backend.submit(Path(os.path.abspath(path)), self.root, self.max_concurrent, self.python, slurm_entry)
        st.update(state="running", **handle, started=_now(), error=None)
        try:
            write_json(path / "status.json", st)
        except BaseException:
            backend.kill(handle)
            raise
        return handle

    def cancel(self, run_id: str, wait: float = 0.0) -> str:
        """Ask a running job to checkpoint and stop (SIGTERM, on either backend); a queued job is cancelled at
        once."""
        path = self._path(run_id)
        with self._locked():
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
                self._backend(st).stop(path, st)  # SIGTERM, or scancel --signal=TERM on SLURM
        deadline = time.time() + wait
        while wait and time.time() < deadline:
            if self.info(run_id).state != "running":
                break
            time.sleep(0.1)
        return self.info(run_id).state

    def resume(self, run_id: str, iterations: int | None = None, backend=None) -> str:
        """Queue a cancelled, failed, interrupted or finished run again from its latest checkpoint, on the
        backend it ran on (``backend``: another one, "local" or "slurm")."""
        path = self._path(run_id)
        if backend is not None:
            backend = backend if hasattr(backend, "submit") else make_backend(backend)
            backend.check()
        with self._locked():
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
                write_json(path / "config.json", registry.config_to_dict(cfg.replace(iterations=iterations)))
            st = read_json(path / "status.json") or {"created": _now(), "preset": info.preset}
            st.pop("cancel_requested", None)
            st.update(state="queued", pid=None, pid_start=None, error=None, resumed=_now(),
                      total=iterations if iterations is not None else cfg.iterations)
            if backend is not None:
                st.pop("slurm_job_id", None)
                st.update(backend=backend.name, backend_options=backend.options())
            write_json(path / "status.json", st)
        self.schedule()
        return self.info(run_id).state

    def wait(self, run_id: str, timeout: float = 600.0, poll: float = 0.2) -> RunInfo:
        """The run's info once it is neither running nor queued (TimeoutError after ``timeout`` seconds)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.info(run_id)
            if info.state == "interrupted":
                # info() knows the two moments that look like a dead worker from outside (a launch in progress, a
                # worker that has just written its final state and exited) by what status.json records; both are
                # done under the runs root's lock, so holding it and looking again is the last word on anything
                # else that is half written (a status.json without a launch time, as older versions wrote)
                with self._locked():
                    info = self.info(run_id)
            if info.state not in ("running", "queued"):
                return info
            time.sleep(poll)
        raise TimeoutError(f"run {run_id} still {self.info(run_id).state} after {timeout} s")


def _error_text(st: dict) -> str | None:
    """status.json's error as text (None where there is none)."""
    error = st.get("error")
    return error if isinstance(error, str) or error is None else str(error)


LAUNCH_GRACE_S = 30.0  # how long a run may say running before its launcher records the worker


def _launch_in_progress(st: dict) -> bool:
    """status.json was written by a launch that has not yet recorded its worker: ``launching`` is recent and no
    ``started`` at or after it (both written by RunManager._launch; anything unreadable counts as not)."""
    launching, started = _when(st.get("launching")), _when(st.get("started"))
    if launching is None or (started is not None and started >= launching):
        return False
    return 0 <= time.time() - launching < LAUNCH_GRACE_S


def _when(value) -> float | None:
    """A timestamp written by files.now() as seconds since the epoch; None for anything else."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        t = _dt.datetime.fromisoformat(value)
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return t.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def worker(run_dir: str, root: str | None = None, max_concurrent: int = 1, launch_only: str | None = None) -> int:
    """Body of a job process: train, keep status.json current, checkpoint on SIGTERM, write TensorBoard
    event files beside metrics.jsonl (a failure to write them is reported in log.txt and status.json's
    ``tensorboard_error``, never fatal)."""
    path = Path(run_dir)
    status_path = path / "status.json"
    lock_root = Path(root) if root else path.parent
    trainer = None
    events = None

    def on_term(signum, frame):
        if trainer is not None:
            trainer.request_stop()
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    state, error, st = "failed", None, {}
    try:
        with root_lock(lock_root):
            st = read_json(status_path) or {}
            if st.get("cancel_requested") is True:  # cancel() came before this process could take the signal
                raise KeyboardInterrupt
            st.update(state="running", pid=os.getpid(), pid_start=proc_start_time(os.getpid()), error=None)
            write_json(status_path, st)
        read_config(path)  # never the defaults for a missing or corrupted config (this message names the run)
        # config.json is in place: a run not started yet resumes from iteration 0, as one killed before its
        # first checkpoint does
        events = EventLog(path)
        trainer = registry.resume_trainer(path, log=events)
        # the steps this worker (re)writes: from iteration 0 when fit() writes the validation line of
        # iteration 0 again, else after the checkpoint (TensorBoard then drops the older file's values there)
        events.purge_step = 0 if trainer.iteration == 0 and not trainer.last_val else trainer.iteration + 1
        res = trainer.fit(progress=False, fresh=False)
        state = "cancelled" if trainer.stop_requested and res.iterations < trainer.cfg.iterations else "finished"
    except KeyboardInterrupt:
        state = "cancelled"
    except Exception as e:  # the error goes to status.json for the page and the CLI
        error = f"{type(e).__name__}: {e}"
        print(error, file=sys.stderr)
    if events is not None:
        events.close()
    with root_lock(lock_root):
        st = read_json(status_path) or st
        st.update(state=state, error=error, ended=_now(), pid=os.getpid())
        if events is not None and events.error:
            st["tensorboard_error"] = events.error
        write_json(status_path, st)
    if root:
        try:
            RunManager(root, max_concurrent=max_concurrent, launch_only=launch_only).schedule()
        except Exception:
            pass
    return 0 if state != "failed" else 1


def slurm_entry(run_dir: str, root: str, max_concurrent: int) -> int:
    """What a SLURM job runs (submitted by ``backends.SlurmBackend``): the worker, its output appended to the
    run's log.txt as a local worker's is; afterwards it schedules only queued SLURM runs."""
    fd = open_regular(Path(run_dir) / "log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.setdefault("LSR1_NO_PROGRESS", "1")
    return worker(run_dir, root, max_concurrent, launch_only="slurm")
