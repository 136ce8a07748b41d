"""Issue 14, items 2, 5, 6, 7, 10 and the run-id / resume items of the minor list: the runs manager.

Item 2's test failed before the fix (two concurrent ``schedule()`` calls launched one run twice); the pid
tests failed because a live unrelated process with the recorded pid kept the run "running" and received
``cancel``'s SIGTERM; the damaged-file tests failed with tracebacks (or the run vanished from ``list``).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lsr1_core.errors import LSR1Error
from lsr1_core.meta import Trainer, preset
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.runs.__main__ import main as runs_main
from lsr1_core.runs.manager import read_config, worker

ROOT = Path(__file__).resolve().parent.parent


def tiny(iterations=3, **kw):
    base = dict(iterations=iterations, val_every=10, ckpt_every=5, batch=8, unroll=2, model={"hidden": 8})
    base.update(kw)
    return preset("quadratic", **base)


def fake_python(tmp_path: Path, seconds: float = 20.0) -> str:
    """A stand-in for the interpreter: records each launch in RUN_DIR/launches, then stays alive with the
    worker's command line (so the manager sees a live worker) for ``seconds``."""
    script = tmp_path / "fakepython"
    script.write_text(f'#!/bin/sh\nfor a; do last="$a"; done\necho $$ >> "$last/launches"\nsleep {seconds}\n')
    script.chmod(0o755)
    return str(script)


def _kill_fakes(root: Path):
    for launches in root.glob("*/launches"):
        for line in launches.read_text().split():
            try:
                os.killpg(int(line), signal.SIGKILL)  # start_new_session: the shell leads its group
            except (ProcessLookupError, PermissionError, ValueError):
                pass


# -- item 2: exactly-once scheduling -------------------------------------------------------------
def test_concurrent_schedule_launches_each_run_exactly_once(tmp_path):
    """Several processes call schedule() at the same instant on roots holding queued runs; each run must
    be launched once, and no more than max_concurrent at a time. Launching is slowed down by 0.3 s (as a
    busy machine or a slow disk would) so that the calls overlap on every trial: without the lock every
    process launched run a (4 launches per trial), and often run b too."""
    trials, procs = 4, 4
    fake = fake_python(tmp_path)
    roots = []
    for t in range(trials):
        root = tmp_path / f"root{t}"
        mgr = RunManager(root, max_concurrent=1, python=fake)
        mgr.start(tiny(), run_id="a", launch=False)
        mgr.start(tiny(), run_id="b", launch=False)
        roots.append(root)
    t0 = time.time() + 12.0  # every child has imported the library by then
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from lsr1_core.runs import RunManager
        launch = RunManager._launch
        def slow_launch(self, path):
            time.sleep(0.3)
            return launch(self, path)
        RunManager._launch = slow_launch
        for t, root in enumerate({[str(r) for r in roots]!r}):
            start = {t0!r} + 1.0 * t
            while time.time() < start:
                time.sleep(0.0005)
            RunManager(root, max_concurrent=1, python={fake!r}).schedule()
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ps = [subprocess.Popen([sys.executable, "-c", child], env=env) for _ in range(procs)]
    try:
        for p in ps:
            assert p.wait(timeout=120) == 0
        time.sleep(1.0)  # let the last launched stand-ins write their line
        for root in roots:
            a = (root / "a" / "launches")
            assert a.exists(), "the oldest queued run was not launched"
            assert len(a.read_text().split()) == 1, f"{root}: run a launched {len(a.read_text().split())} times"
            assert not (root / "b" / "launches").exists(), "max_concurrent=1 exceeded"
            st = json.loads((root / "a" / "status.json").read_text())
            assert st["state"] == "running" and isinstance(st["pid_start"], int)
            assert RunManager(root).info("b").state == "queued"
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
        for root in roots:
            _kill_fakes(root)


def test_concurrent_auto_named_starts_get_distinct_runs(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    ids = {mgr.start(tiny(), preset_name="quadratic", launch=False) for _ in range(3)}
    assert len(ids) == 3


# -- item 5: process identity ---------------------------------------------------------------------
def _fake_running(mgr, rid, pid, pid_start=None):
    path = mgr.root / rid
    st = json.loads((path / "status.json").read_text())
    st.update(state="running", pid=pid, pid_start=pid_start)
    (path / "status.json").write_text(json.dumps(st))


def test_a_reused_pid_is_neither_trusted_nor_signalled(tmp_path):
    mgr = RunManager(tmp_path / "jobs", max_concurrent=1)
    mgr.start(tiny(), run_id="r", launch=False)
    mgr.start(tiny(), run_id="next", launch=False)
    other = subprocess.Popen(["sleep", "60"])  # an unrelated process that now owns the recorded pid
    try:
        _fake_running(mgr, "r", other.pid)
        assert mgr.info("r").state == "interrupted"
        with pytest.raises(LSR1Error, match="interrupted"):
            mgr.cancel("r")
        time.sleep(0.2)
        assert other.poll() is None, "cancel signalled an unrelated process"
        # the queue is not blocked by it
        mgr.python = fake_python(tmp_path)
        assert mgr.schedule() == ["next"]
    finally:
        other.kill()
        other.wait()
        _kill_fakes(mgr.root)


def test_a_worker_pid_with_another_start_time_is_not_trusted(tmp_path):
    mgr = RunManager(tmp_path / "jobs", python=fake_python(tmp_path))
    mgr.start(tiny(), run_id="r")
    try:
        st = json.loads((mgr.root / "r" / "status.json").read_text())
        assert mgr.info("r").state == "running"
        _fake_running(mgr, "r", st["pid"], st["pid_start"] + 1)  # same pid, a different process incarnation
        assert mgr.info("r").state == "interrupted"
        _fake_running(mgr, "r", st["pid"], st["pid_start"])
        assert mgr.info("r").state == "running"
        for bad in ("12", -5, True, [1], None, 0):
            _fake_running(mgr, "r", bad)
            assert mgr.info("r").state == "interrupted"
    finally:
        _kill_fakes(mgr.root)


# -- item 6: damaged run files ----------------------------------------------------------------------
@pytest.mark.parametrize("damage", [
    ("status.json", "[]"), ("status.json", '{"state": "running", "pid": "x"}'), ("status.json", '{"state": 3}'),
    ("status.json", '{"state": "queu'), ("status.json", "\x00\xff"), ("config.json", "[1, 2]"),
    ("config.json", '{"iterations": "many"}'), ("metrics.jsonl", '[1, 2]\n{"iteration": "abc"}\n{"iteration": 1.5}\n'
                                                                   '{"iteration": null, "val_loss": "x"}\n'),
    ("metrics.jsonl", '{"iteration": 2, "elapsed_s": "x", "val_loss": [1]}\n'),
])
def test_one_damaged_run_never_breaks_list_start_show(tmp_path, capsys, damage):
    root = tmp_path / "jobs"
    mgr = RunManager(root)
    mgr.start(tiny(), run_id="bad", launch=False)
    name, text = damage
    (root / "bad" / name).write_text(text)
    runs = {r.run_id: r for r in mgr.list()}
    assert "bad" in runs  # shown, not silently dropped
    assert isinstance(runs["bad"].iteration, int) and isinstance(runs["bad"].total, int)
    assert runs_main(["--root", str(root), "list"]) == 0
    assert runs_main(["--root", str(root), "show", "bad"]) == 0
    # a new run is launched, not left queued behind the damaged one
    fake = fake_python(tmp_path)
    try:
        mgr2 = RunManager(root, python=fake)
        # `list` above schedules, so "bad" may have been launched by now (a real worker, which fails on its
        # damaged files once Python has started — seconds on a loaded machine); its slot is then taken until it
        # ends, so cancel it and wait for that rather than racing its start-up
        if mgr2.info("bad").state in ("queued", "running"):
            mgr2.cancel("bad", wait=60)
        assert mgr2.info("bad").state != "running"
        rid = mgr2.start(tiny(), run_id="new")
        assert mgr2.info(rid).state == "running"
    finally:
        _kill_fakes(root)
    assert "Traceback" not in capsys.readouterr().err


def test_read_metrics_keeps_only_records_with_integer_iterations(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0}\n[1]\n"s"\n{"iteration": "1"}\n{"iteration": 2.0}\n{"x": 1}\n{"iter')
    assert [m["iteration"] for m in read_metrics(tmp_path)] == [0, 2]


# -- item 7: resume never falls back to the default config ---------------------------------------
@pytest.mark.parametrize("config", [None, "", "[]", '"quadratic"', "{bad", '{"lr": "abc"}', "\xff"])
def test_resume_with_missing_or_corrupt_config_is_refused_and_changes_nothing(tmp_path, config):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="r", launch=False)
    mgr.cancel(rid)
    cfg_path = mgr.root / rid / "config.json"
    if config is None:
        cfg_path.unlink()
    else:
        cfg_path.write_text(config)
    before = cfg_path.read_bytes() if cfg_path.exists() else None
    with pytest.raises(LSR1Error, match="config"):
        mgr.resume(rid, iterations=50)
    assert (cfg_path.read_bytes() if cfg_path.exists() else None) == before  # the defaults were written here
    assert mgr.info(rid).state == "cancelled"
    with pytest.raises(LSR1Error, match="config"):
        read_config(mgr.root / rid)
    with pytest.raises(LSR1Error, match="config"):
        Trainer.resume(mgr.root / rid, iterations=50)


def test_worker_with_a_corrupt_config_fails_without_training(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="r", launch=False)
    (mgr.root / rid / "config.json").write_text("[]")
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert worker(str(mgr.root / rid)) == 1
    finally:
        signal.signal(signal.SIGTERM, old)
    st = json.loads((mgr.root / rid / "status.json").read_text())
    assert st["state"] == "failed" and "config.json" in st["error"]
    assert not (mgr.root / rid / "metrics.jsonl").exists() and not (mgr.root / rid / "best.json").exists()


def test_resume_below_the_current_iteration_is_refused(tmp_path):
    Trainer(tiny(4), tmp_path / "run").fit(progress=False)
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(LSR1Error, match="already at 4"):
        Trainer.resume(tmp_path / "run", iterations=1)
    assert (tmp_path / "run" / "config.json").read_text() == before


# -- item 10: SIGKILL before the first checkpoint -------------------------------------------------
def test_resume_after_a_kill_before_the_first_checkpoint_logs_iteration_zero_once(tmp_path):
    run = tmp_path / "run"
    tr = Trainer(tiny(3), run)
    tr._prepare_dir(fresh=True)
    # what a worker killed after validating iteration 0 (and before any latest.*) leaves behind
    tr.last_val = tr.validate()
    tr._write_metrics({"iteration": 0, **{"val_" + k: v for k, v in tr.last_val.items()}})
    assert not (run / "latest.json").exists()
    Trainer.resume(run).fit(progress=False)
    its = [m["iteration"] for m in read_metrics(run)]
    assert its == [0, 1, 2, 3], its


# -- minor: run ids ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x\n", "x\r", "../x", "", ".x", "a b", "x" * 82, "é"])
def test_bad_run_names_are_refused(tmp_path, name, capsys):
    mgr = RunManager(tmp_path / "jobs")
    with pytest.raises(LSR1Error, match="run id"):
        mgr.start(tiny(), run_id=name, launch=False)
    assert runs_main(["--root", str(tmp_path / "jobs"), "start", "--preset", "quadratic", "--name", name]) == 2
    assert "error:" in capsys.readouterr().err
    assert not any((tmp_path / "jobs").iterdir())


# -- a full disk loses nothing ---------------------------------------------------------------------
def test_a_full_disk_during_checkpointing_loses_nothing(tmp_path):
    """Writes beyond RLIMIT_FSIZE fail like writes to a full disk (EFBIG instead of ENOSPC). A resumed run
    whose checkpoint writes fail stops with an error; its previous checkpoint still loads, no temporary
    file is left, and a later resume (with room again) finishes with every iteration logged once."""
    cfg = tiny(4, ckpt_every=2, val_every=2, model={"hidden": 64})
    run = tmp_path / "run"
    Trainer(cfg, run).fit(progress=False)
    ckpt_bytes = max(p.stat().st_size for p in run.glob("latest.*.safetensors"))
    limit = ckpt_bytes // 2
    assert max(p.stat().st_size for p in run.iterdir() if p.suffix != ".safetensors") < limit
    child = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from lsr1_core.meta import Trainer
        from lsr1_core.errors import CheckpointError
        tr = Trainer.resume({str(run)!r}, iterations=8)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        try:
            tr.fit(progress=False)
        except CheckpointError as e:  # a raw SafetensorError before the fix
            print("write failed:", e)
            raise SystemExit(3)
    """)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 3, out.stdout + out.stderr
    assert not list(run.glob(".*.tmp")), "a temporary file was left behind"
    tr = Trainer.resume(run)  # the previous checkpoint loads
    assert tr.iteration == 4
    Trainer.resume(run, iterations=8).fit(progress=False)
    its = [m["iteration"] for m in read_metrics(run)]
    assert its == list(range(9)), its


def test_a_run_being_created_is_not_listed_as_failed_but_an_old_one_is(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    mgr.start(tiny(), run_id="r", launch=False)
    (mgr.root / "r" / "status.json").unlink()  # as between start()'s config and status writes
    assert mgr.list() == []
    old = time.time() - 3600
    os.utime(mgr.root / "r" / "config.json", (old, old))
    (info,) = mgr.list()
    assert info.state == "failed" and "status.json" in info.error


@pytest.mark.parametrize("field, value", [("iteration", "abc"), ("param_groups", 5), ("best_val", [1]),
                                          ("iteration", None)])
def test_a_damaged_latest_card_is_a_checkpoint_error(tmp_path, field, value):
    from lsr1_core.errors import CheckpointError
    run = tmp_path / "run"
    Trainer(tiny(2, ckpt_every=1), run).fit(progress=False)
    card = json.loads((run / "latest.json").read_text())
    card[field] = value
    (run / "latest.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="damaged"):
        Trainer.resume(run)


def test_wait_does_not_report_a_launch_in_progress_or_a_worker_just_finished_as_interrupted(tmp_path):
    """While a launch is in progress status.json says running before the worker's pid is recorded, and a worker that
    ends writes its final state and exits between info()'s two looks: from outside both look like a dead worker for a
    moment. Both happen under the runs root's lock; wait() looks again holding it (a flaky CI failure: a queued run
    started by the previous run's worker was reported interrupted)."""
    import threading

    from lsr1_core.runs.files import root_lock

    mgr = RunManager(tmp_path / "jobs", max_concurrent=1)
    mgr.start(tiny(), run_id="r", launch=False)
    path = mgr.root / "r"
    st = json.loads((path / "status.json").read_text())
    locked, release = threading.Event(), threading.Event()

    def launcher():  # holds the lock with the run marked running and no pid yet, then records its end
        with root_lock(mgr.root):
            st.update(state="running", pid=None, pid_start=None)
            (path / "status.json").write_text(json.dumps(st))
            locked.set()
            release.wait(5)
            st.update(state="finished")
            (path / "status.json").write_text(json.dumps(st))

    t = threading.Thread(target=launcher)
    t.start()
    try:
        assert locked.wait(5)
        assert mgr.info("r").state == "interrupted"  # what a look from outside sees meanwhile
        threading.Timer(0.3, release.set).start()
        assert mgr.wait("r", timeout=10).state == "finished"
    finally:
        release.set()
        t.join()
    # a worker that really died is still reported interrupted
    st.update(state="running", pid=None, pid_start=None)
    (path / "status.json").write_text(json.dumps(st))
    assert mgr.wait("r", timeout=5).state == "interrupted"


def test_info_tells_a_launch_in_progress_and_a_worker_just_finished_from_a_dead_worker(tmp_path, monkeypatch):
    """info() itself, not only wait(): the Meta-training page showed a run as interrupted for one refresh while its
    launcher had not yet recorded the worker's pid, or right as its worker ended."""
    from datetime import datetime, timedelta, timezone

    from lsr1_core.runs import manager as mgr_mod

    mgr = RunManager(tmp_path / "jobs", max_concurrent=1)
    mgr.start(tiny(), run_id="r", launch=False)
    path = mgr.root / "r"
    st = json.loads((path / "status.json").read_text())

    def write(**kw):
        st.update(kw)
        (path / "status.json").write_text(json.dumps(st))

    def stamp(seconds_ago):
        return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")

    from lsr1_core.runs.files import root_lock

    # a launch in progress: running, no pid, launched just now and not started since, the runs root's lock held by
    # the launcher (here: this test, through another open of the lock file)
    write(state="running", pid=None, pid_start=None, launching=stamp(0))
    st.pop("started", None)
    (path / "status.json").write_text(json.dumps(st))
    with root_lock(mgr.root):
        assert mgr.info("r").state == "running"
        write(started=stamp(60))  # a start recorded by an earlier launch does not end this one
        assert mgr.info("r").state == "running"
    # nobody holds the lock: no launch is in progress, the launcher died (e.g. its status write failed)
    assert mgr.info("r").state == "interrupted"
    # ... and where this manager holds it (as cancel and resume do) no launch of another can be half done
    with mgr._locked():
        assert mgr.info("r").state == "interrupted"
    with root_lock(mgr.root):
        # a launch that never recorded its worker is interrupted once the grace has passed, whoever holds the lock
        write(launching=stamp(mgr_mod.LAUNCH_GRACE_S + 5))
        assert mgr.info("r").state == "interrupted"
        # a launch whose worker was recorded and is gone: interrupted (started at or after launching)
        write(launching=stamp(0), started=stamp(0), pid=2 ** 22 + 12345)
        assert mgr.info("r").state == "interrupted"
    # damaged or hostile timestamps are not a launch in progress
    with root_lock(mgr.root):
        for bad in ("yesterday", 12, None, ["2026"], "9" * 100, "2026-13-45T99:00:00"):
            write(launching=bad, started=None, pid=None)
            assert mgr.info("r").state == "interrupted", bad

    # a worker that writes its final state and exits between info()'s read of status.json and its look at the
    # process: the look finds no process, status.json read again says finished
    write(state="running", pid=None, launching=None, error=None)
    real = RunManager._worker_alive

    def finishes_meanwhile(self, p, s):
        (path / "status.json").write_text(json.dumps(dict(st, state="finished")))
        return real(self, p, s)

    monkeypatch.setattr(RunManager, "_worker_alive", finishes_meanwhile)
    assert mgr.info("r").state == "finished"
