"""Where a run's worker executes: :class:`LocalBackend` (a process on this machine, the default) or
:class:`SlurmBackend` (a SLURM job, submitted through ``submitit``).

The runs manager (``manager.py``) keeps every status file and the lock; a backend only starts a worker
(:meth:`Backend.submit` → the fields that identify it in status.json), says whether that worker is still
the one status.json names (:meth:`Backend.alive`), asks it to checkpoint and stop (:meth:`Backend.stop`) and
kills one whose status could not be recorded (:meth:`Backend.kill`). A run's backend and its options are
kept in status.json (``"backend"``, ``"backend_options"``), so whoever schedules the run next — the page, the
CLI, a worker that just ended — launches it the same way.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

from ..checkpoints import open_regular
from ..errors import LSR1Error

DEFAULT_BACKEND = "local"


# --- local processes ------------------------------------------------------------------------------
def proc_start_time(pid: int) -> int | None:
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


def pid_alive(pid, start_time=None, run_dir: Path | None = None) -> bool:
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
    started = proc_start_time(pid)
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


class Backend:
    """How a run's worker is started, watched and stopped (see the module docstring)."""

    name = "?"

    def options(self) -> dict:
        """This backend's settings, as status.json keeps them (``from_options`` reads them back)."""
        return {}

    @classmethod
    def from_options(cls, options) -> "Backend":
        if options not in (None, {}):
            raise LSR1Error(f"the {cls.name} backend takes no options, got {options!r}")
        return cls()

    def check(self) -> None:
        """``LSR1Error`` saying what is missing when this backend cannot launch here."""

    def submit(self, run_path: Path, root: Path, max_concurrent: int, python: str, entry) -> dict:
        """Start the worker of ``run_path``; the fields that identify it in status.json."""
        raise NotImplementedError

    def alive(self, run_path: Path, st: dict) -> bool:
        raise NotImplementedError

    def stop(self, run_path: Path, st: dict) -> None:
        """Ask the worker to checkpoint and stop (it then records ``cancelled`` itself)."""
        raise NotImplementedError

    def kill(self, handle: dict) -> None:
        """Kill a worker just submitted (its status could not be recorded)."""
        raise NotImplementedError


class LocalBackend(Backend):
    """A worker process on this machine (``python -m lsr1_core.runs _worker RUN_DIR``), in its own session,
    its output in the run's log.txt. Identified by its pid and start time; stopped with SIGTERM."""

    name = "local"

    def __init__(self):
        self._procs: dict[int, subprocess.Popen] = {}

    def submit(self, run_path, root, max_concurrent, python, entry) -> dict:
        env = dict(os.environ, LSR1_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
        cmd = [python, "-m", "lsr1_core.runs", "--root", os.path.abspath(root),
               "--max-concurrent", str(max_concurrent), "_worker", os.path.abspath(run_path)]
        fd = open_regular(Path(run_path) / "log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # never a FIFO
        try:
            proc = subprocess.Popen(cmd, stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env, cwd=os.getcwd())
        finally:
            os.close(fd)
        self._procs[proc.pid] = proc
        return {"pid": proc.pid, "pid_start": proc_start_time(proc.pid)}

    def alive(self, run_path, st) -> bool:
        return pid_alive(st.get("pid"), st.get("pid_start"), run_path)

    def stop(self, run_path, st) -> None:
        try:
            os.kill(st["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass

    def kill(self, handle) -> None:
        pid = handle.get("pid")
        try:
            os.killpg(pid, signal.SIGKILL)  # start_new_session: the worker leads its own group
        except OSError:
            pass
        proc = self._procs.pop(pid, None)
        if proc is not None:
            proc.wait()


# --- SLURM ----------------------------------------------------------------------------------------
_JOB_ID = re.compile(r"[0-9]{1,20}\Z")
# squeue states of a job that still holds (or will hold) its worker
_LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
         "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}


def slurm_job_name(run_path: Path) -> str:
    """The SLURM job name of a run: its id and a hash of its absolute path (a run copied into another root
    with the same job id in its status.json is not that job's run)."""
    real = os.path.realpath(run_path)
    return f"lsr1-{Path(real).name}-{hashlib.sha1(real.encode()).hexdigest()[:8]}"


class SlurmBackend(Backend):
    """A SLURM job per run, submitted with ``submitit`` (its files in RUN_DIR/slurm/, the worker's output in
    log.txt as for local runs). Identified by its job id and job name (``squeue``); stopped with
    ``scancel --signal=TERM`` (the worker checkpoints, as on SIGTERM locally), or ``scancel`` while pending.

    Options: ``partition``, ``time_min`` (the job's time limit, minutes), ``cpus_per_task``,
    ``gpus_per_node``. The run directory must be on a file system the compute nodes share."""

    name = "slurm"
    OPTIONS = {"partition": (str, type(None)), "time_min": int, "cpus_per_task": int, "gpus_per_node": int}

    def __init__(self, partition: str | None = None, time_min: int = 24 * 60, cpus_per_task: int = 1,
                 gpus_per_node: int = 0):
        for key, lo in (("time_min", 1), ("cpus_per_task", 1), ("gpus_per_node", 0)):
            v = locals()[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise LSR1Error(f"SLURM option {key} must be an integer >= {lo}, got {v!r}")
        if partition is not None and not (isinstance(partition, str) and re.fullmatch(r"[A-Za-z0-9_.,-]{1,100}",
                                                                                     partition)):
            raise LSR1Error(f"SLURM partition {partition!r} is not a partition name")
        self.partition, self.time_min = partition, time_min
        self.cpus_per_task, self.gpus_per_node = cpus_per_task, gpus_per_node

    def options(self) -> dict:
        return {"partition": self.partition, "time_min": self.time_min, "cpus_per_task": self.cpus_per_task,
                "gpus_per_node": self.gpus_per_node}

    @classmethod
    def from_options(cls, options) -> "SlurmBackend":
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise LSR1Error(f"the SLURM backend's options must be an object, got {type(options).__name__}")
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise LSR1Error(f"unknown SLURM options {unknown}; known options are {sorted(cls.OPTIONS)}")
        return cls(**options)

    def check(self) -> None:
        try:
            import submitit  # noqa: F401  (optional: pip install submitit, or the [slurm] extra)
        except ImportError:
            raise LSR1Error("the SLURM backend needs the submitit package: pip install submitit "
                            "(or pip install -e '.[slurm]')") from None
        missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
        if missing:
            raise LSR1Error(f"the SLURM backend needs the SLURM commands {missing} on PATH (is this a SLURM "
                            "login node? use --backend local otherwise)")
        try:
            out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", "0"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise LSR1Error(f"cannot reach the SLURM controller (squeue: {e})") from None
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            raise LSR1Error(f"cannot reach the SLURM controller: {out.stderr.strip() or out.stdout.strip()}")

    def submit(self, run_path, root, max_concurrent, python, entry) -> dict:
        self.check()
        import submitit

        run_path = Path(os.path.abspath(run_path))
        folder = run_path / "slurm"
        folder.mkdir(mode=0o700, exist_ok=True)  # submitit's pickles: this user's only
        pkg_parent = str(Path(__file__).resolve().parents[2])
        ex = submitit.SlurmExecutor(folder=folder, python=python, max_num_timeout=0)
        params = dict(job_name=slurm_job_name(run_path), time=self.time_min, cpus_per_task=self.cpus_per_task,
                      nodes=1, ntasks_per_node=1, stderr_to_stdout=True,
                      setup=[f"export PYTHONPATH={shlex.quote(pkg_parent)}${{PYTHONPATH:+:$PYTHONPATH}}",
                             "export LSR1_NO_PROGRESS=1 PYTHONUNBUFFERED=1"])
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        ex.update_parameters(**params)
        try:
            job = ex.submit(entry, str(run_path), os.path.abspath(root), max_concurrent)
        except Exception as e:  # submitit raises its own errors and CalledProcessError for sbatch
            raise LSR1Error(f"sbatch refused the job: {e}") from None
        return {"pid": None, "pid_start": None, "slurm_job_id": str(job.job_id)}

    @staticmethod
    def _squeue(job_id) -> tuple[str, str] | None:
        """(state, name) of the job; ("", "") when SLURM no longer knows it; None when SLURM cannot be asked."""
        try:
            out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T|%j"], capture_output=True, text=True,
                                 timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return ("", "") if "Invalid job id" in out.stderr else None
        line = out.stdout.strip().splitlines()
        if not line:
            return "", ""
        state, _, name = line[0].partition("|")
        return state.strip(), name.strip()

    def _job(self, run_path, st) -> tuple[str | None, tuple[str, str] | None]:
        job_id = st.get("slurm_job_id")
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            return None, ("", "")
        return job_id, self._squeue(job_id)

    def alive(self, run_path, st) -> bool:
        """The job is queued or running under this run's job name. When SLURM cannot be asked (no squeue
        here, the controller down) the run counts as alive: reporting it interrupted would invite a second
        worker on the same run."""
        job_id, q = self._job(run_path, st)
        if q is None:
            return True
        return q[0] in _LIVE and q[1] == slurm_job_name(run_path)

    def stop(self, run_path, st) -> None:
        job_id, q = self._job(run_path, st)
        if job_id is None or q is None or q[1] != slurm_job_name(run_path):
            return
        # a pending job has no worker to signal: it is removed (the run then reads cancelled)
        cmd = ["scancel", job_id] if q[0] == "PENDING" else ["scancel", "--signal=TERM", job_id]
        subprocess.run(cmd, capture_output=True, timeout=30)

    def kill(self, handle) -> None:
        job_id = handle.get("slurm_job_id")
        if job_id:
            try:
                subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass


BACKENDS = {"local": LocalBackend, "slurm": SlurmBackend}


def make_backend(name: str | None = None, options=None) -> Backend:
    """The backend named ``name`` (default local) with ``options``; ``LSR1Error`` naming the choices."""
    cls = BACKENDS.get(name or DEFAULT_BACKEND) if isinstance(name, (str, type(None))) else None
    if cls is None:
        raise LSR1Error(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return cls.from_options(options)


def backend_of(st: dict) -> Backend:
    """The backend a run's status.json names (runs from before backends existed are local)."""
    return make_backend(st.get("backend"), st.get("backend_options"))
