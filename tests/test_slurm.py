"""The SLURM backend against a real single-node SLURM cluster (issue 25, part 4).

The fixture starts munged, slurmctld and slurmd on localhost (Debian's ``slurm-wlm`` and ``munge`` packages:
``apt-get install -y slurm-wlm munge``), with a minimal slurm.conf, its state, spool, key and sockets in a
temporary directory and its own ports, and stops them afterwards. Every test here is skipped, with the reason,
where that cannot be done: the packages or submitit are missing, the tests do not run as root (slurmd must),
or the daemons do not come up. CI does not install SLURM; these tests then skip.

A run launched through the SLURM backend reaches ``finished`` and its checkpoint loads; cancel stops a running
job (the worker checkpoints, as on SIGTERM locally) and removes a pending one; the command line's
``--backend slurm`` does the same as the library.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lsr1_core.errors import LSR1Error
from lsr1_core.learned.io import load_model
from lsr1_core.meta import preset
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.runs.backends import SlurmBackend

REPO = Path(__file__).resolve().parent.parent
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")


def tiny(iterations=6, **kw):
    base = dict(iterations=iterations, val_every=2, ckpt_every=2, batch=8, unroll=2, model={"hidden": 8})
    base.update(kw)
    return preset("quadratic", **base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _why_not() -> str | None:
    """Why a SLURM cluster cannot be started here (None: it can be tried)."""
    if not sys.platform.startswith("linux"):
        return "SLURM needs Linux"
    missing = [c for c in DAEMONS + CLIENTS if shutil.which(c) is None and not Path(f"/usr/sbin/{c}").exists()]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing; on Debian: apt-get install -y slurm-wlm "
                "munge)")
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install submitit)"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster on localhost; yields the environment its commands need (SLURM_CONF)."""
    why = _why_not()
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=lsr1test", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", f"AuthInfo=socket={d}/munge.socket", "CredType=cred/munge",
        f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
        f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
        f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2", "MpiDefault=none",
        "KillWait=30", "MinJobAge=300",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=100 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs = []
    try:
        procs.append(subprocess.Popen(
            [_exe("munged"), "-F", "-f", "-S", f"{d}/munge.socket", f"--key-file={key}", f"--log-file={d}/munged.log",
             f"--pid-file={d}/munged.pid", f"--seed-file={d}/munged.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env))
        deadline = time.time() + 10
        while not (d / "munge.socket").exists() and time.time() < deadline:
            time.sleep(0.1)
        procs.append(subprocess.Popen([_exe("slurmctld"), "-D", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, env=env))
        procs.append(subprocess.Popen([_exe("slurmd"), "-D", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, env=env))
        deadline, out = time.time() + 60, ""
        while time.time() < deadline:
            dead = [p.args[0] for p in procs if p.poll() is not None]
            if dead:
                break
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env)
            out = (r.stdout + r.stderr).strip()
            if r.returncode == 0 and out.split() and out.split()[0].rstrip("*") in ("idle", "mixed", "allocated"):
                break
            time.sleep(0.5)
        else:
            dead = []
        if dead or not out or out.split()[0].rstrip("*") not in ("idle", "mixed", "allocated"):
            logs = "\n".join(f"--- {n}\n{_tail(d / n)}" for n in ("munged.log", "slurmctld.log", "slurmd.log"))
            pytest.skip(f"the single-node SLURM cluster did not come up (sinfo: {out!r}; ended: {dead})\n{logs}")
        yield env
    finally:
        # every job of this cluster ends before its daemons do (no job step is left behind without its slurmd)
        subprocess.run(["scancel", "--user", str(os.geteuid())], capture_output=True, env=env)
        deadline = time.time() + 60
        while time.time() < deadline and all(p.poll() is None for p in procs):
            r = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=env)
            if r.returncode != 0 or not r.stdout.strip():
                break
            time.sleep(0.5)
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    return slurm_cluster


def _squeue(env) -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %T %j"], capture_output=True, text=True, env=env).stdout


def test_a_slurm_run_finishes_and_its_checkpoint_loads(tmp_path, slurm_env):
    mgr = RunManager(tmp_path / "jobs", backend="slurm")
    rid = mgr.start(tiny(), run_id="s")
    st = json.loads((mgr.root / rid / "status.json").read_text())
    assert st["backend"] == "slurm" and st["slurm_job_id"].isdigit()
    assert mgr.info(rid).backend == "slurm"
    info = mgr.wait(rid, timeout=240)
    assert info.state == "finished", (info.error, (mgr.root / rid / "log.txt").read_text()[-2000:])
    assert info.iteration == 6 and [m["iteration"] for m in read_metrics(info.path)] == list(range(7))
    net, card = load_model(info.path / "best")  # the best checkpoint loads (hash and dtype checks pass)
    assert sum(p.numel() for p in net.parameters()) > 0 and card["iterations"] >= 0
    assert json.loads((info.path / "config.json").read_text())["problem"] == "lsr1"
    assert list(info.path.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert "Job completed successfully" in (info.path / "log.txt").read_text()  # the job's output is in log.txt


def test_cancel_stops_a_running_slurm_job_with_a_checkpoint_and_resume_finishes_it(tmp_path, slurm_env):
    mgr = RunManager(tmp_path / "jobs", backend="slurm")
    rid = mgr.start(tiny(iterations=200_000, val_every=50, ckpt_every=100_000), run_id="c")
    deadline = time.time() + 120
    while len(read_metrics(mgr.root / rid)) < 5 and time.time() < deadline:
        assert mgr.info(rid).state == "running", mgr.info(rid)
        time.sleep(0.2)
    assert len(read_metrics(mgr.root / rid)) >= 5, (mgr.root / rid / "log.txt").read_text()[-2000:]
    assert mgr.cancel(rid, wait=60) == "cancelled"
    info = mgr.info(rid)
    assert 0 < info.iteration < 200_000
    latest = json.loads((info.path / "latest.json").read_text())
    assert latest["iteration"] == info.iteration  # the worker checkpointed on the signal
    job = json.loads((info.path / "status.json").read_text())["slurm_job_id"]
    deadline = time.time() + 60
    while any(line.split()[0] == job and line.split()[1] in ("RUNNING", "PENDING") for line in
              _squeue(slurm_env).splitlines()) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(line.split()[0] == job and line.split()[1] in ("RUNNING", "PENDING")
                   for line in _squeue(slurm_env).splitlines()), _squeue(slurm_env)
    before = info.iteration
    mgr.resume(rid, iterations=before + 4)
    info = mgr.wait(rid, timeout=240)
    assert info.state == "finished" and info.iteration == before + 4, info
    assert [m["iteration"] for m in read_metrics(info.path)] == list(range(before + 5))


def test_cancel_removes_a_pending_slurm_job(tmp_path, slurm_env):
    # every CPU of the node taken by a plain job: the run's job stays pending until it is cancelled
    blocker = subprocess.run(["sbatch", "--parsable", "-n", "1", f"--cpus-per-task={os.cpu_count() or 1}",
                              "--wrap", "sleep 300", "-o", "/dev/null"], capture_output=True, text=True)
    assert blocker.returncode == 0, blocker.stderr
    try:
        mgr = RunManager(tmp_path / "jobs", backend="slurm")
        rid = mgr.start(tiny(), run_id="p")
        job = json.loads((mgr.root / rid / "status.json").read_text())["slurm_job_id"]
        time.sleep(1)
        assert f"{job} PENDING" in _squeue(slurm_env), _squeue(slurm_env)
        assert mgr.info(rid).state == "running"  # queued on the cluster: the manager counts it as started
        assert mgr.cancel(rid, wait=30) == "cancelled"
        assert job not in [line.split()[0] for line in _squeue(slurm_env).splitlines()]
        assert not read_metrics(mgr.root / rid)  # it never trained
    finally:
        subprocess.run(["scancel", blocker.stdout.strip().split(";")[0]], capture_output=True)


def test_the_command_line_launches_onto_slurm(tmp_path, slurm_env):
    root = tmp_path / "jobs"
    cmd = [sys.executable, "-m", "lsr1_core.runs", "--root", str(root), "start", "--preset", "quadratic",
           "--name", "cli", "--backend", "slurm", "--slurm-time", "10", "--iterations", "4", "--set", "batch=8",
           "--set", "unroll=2", "--set", "model.hidden=8", "--set", "val_every=2", "--wait"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["cli", "finished"]
    st = json.loads((root / "cli" / "status.json").read_text())
    assert st["backend"] == "slurm" and st["backend_options"]["time_min"] == 10


def test_slurm_options_are_checked():
    with pytest.raises(LSR1Error, match="time_min"):
        SlurmBackend(time_min=0)
    with pytest.raises(LSR1Error, match="unknown SLURM options"):
        SlurmBackend.from_options({"nodes": 4})
    with pytest.raises(LSR1Error, match="partition"):
        SlurmBackend(partition="a b; rm -rf /")
