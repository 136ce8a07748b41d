"""Issue 24 (reliability round three): runs, checkpoints and command lines.

Each test failed before its fix: resume with a missing latest.* wiped metrics.jsonl and best.* (1); a FIFO
named like a run file hung ``runs list`` under the lock (2); Ctrl-C between an iteration and its metric line
lost that line and changed the final model (3); a status.json that could not be written left the run queued
with a live worker, and each schedule() spawned another (4); a huge weights file was hashed / read whole
before its header was looked at (6); damaged metric lines made resume raise AttributeError / TypeError /
UnicodeDecodeError (7); several CLIs raised tracebacks (8); "false" as a card boolean turned the option on
(14); cancelling a copy of a running run in a second root signalled the original worker (16); an I64 header
over float weights loaded as ~1e18 (17); ``from lsr1_core.checkpoints import load_model`` raised ImportError
(18); a cancel right after a start was reported as interrupted, and stale status temp files stayed (21).
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
import torch

from lsr1_core.checkpoints import load_tensors_and_card, read_checkpoint_bytes
from lsr1_core.errors import CheckpointError, LSR1Error
from lsr1_core.meta import Trainer, preset
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.runs import manager as manager_mod
from lsr1_core.runs.__main__ import main as runs_main
from lsr1_core.runs.manager import worker

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def tiny(iterations=4, **kw):
    base = dict(iterations=iterations, val_every=2, ckpt_every=2, batch=8, unroll=2, model={"hidden": 8})
    base.update(kw)
    return preset("quadratic", **base)


def fake_python(tmp_path: Path, seconds: float = 30.0) -> str:
    script = tmp_path / "fakepython"
    script.write_text(f'#!/bin/sh\nfor a; do last="$a"; done\necho $$ >> "$last/launches"\nsleep {seconds}\n')
    script.chmod(0o755)
    return str(script)


def _launches(run: Path) -> list[int]:
    f = run / "launches"
    return [int(x) for x in f.read_text().split()] if f.exists() else []


def _kill(pids):
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _files(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.startswith("latest")}


# -- 1: a missing latest.* never starts a run over -------------------------------------------------
def test_resume_with_a_missing_latest_is_refused_and_loses_nothing(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(6), run_id="r", launch=False)
    mgr.cancel(rid)
    run = mgr.root / rid
    Trainer.resume(run).fit(progress=False)
    assert [m["iteration"] for m in read_metrics(run)] == list(range(7))
    for p in run.glob("latest.*"):
        p.unlink()
    before = _files(run)
    with pytest.raises(LSR1Error, match="latest.json is missing.*iteration 6"):
        Trainer.resume(run)
    with pytest.raises(LSR1Error, match="latest"):
        mgr.resume(rid)  # refused at once, the run is not queued
    assert mgr.info(rid).state == "cancelled"
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert worker(str(run)) == 1  # the worker too: failed with the reason, nothing trained
    finally:
        signal.signal(signal.SIGTERM, old)
    st = json.loads((run / "status.json").read_text())
    assert st["state"] == "failed" and "latest" in st["error"]
    after = _files(run)
    for name in ("metrics.jsonl", "best.json", "config.json"):
        assert after[name] == before[name], name
    # a new run in the same directory is refused as well (it would overwrite metrics and best)
    with pytest.raises(LSR1Error, match="already holds a run"):
        Trainer(tiny(6), run).fit(progress=False)


def test_a_run_killed_before_its_first_checkpoint_still_starts_over(tmp_path):
    run = tmp_path / "run"
    tr = Trainer(tiny(3), run)
    tr._prepare_dir(fresh=True)
    tr.last_val = tr.validate()
    tr.save_best(0)
    tr._write_metrics({"iteration": 0, **{"val_" + k: v for k, v in tr.last_val.items()}})
    Trainer.resume(run).fit(progress=False)
    assert [m["iteration"] for m in read_metrics(run)] == [0, 1, 2, 3]


# -- 2: run files that are not regular files never block ----------------------------------------
@pytest.mark.parametrize("name", ["status.json", "config.json", "metrics.jsonl", "log.txt", "best.json"])
def test_a_fifo_run_file_never_blocks_list_or_the_lock(tmp_path, name):
    root = tmp_path / "jobs"
    mgr = RunManager(root)
    mgr.start(tiny(), run_id="ok", launch=False)
    mgr.cancel("ok")
    rid = mgr.start(tiny(), run_id="bad", launch=False)
    st = json.loads((root / rid / "status.json").read_text())
    st.update(state="running", pid=999999, pid_start=1)  # a dead worker: info() reads log.txt's tail
    (root / rid / "status.json").write_text(json.dumps(st))
    path = root / rid / name
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    child = textwrap.dedent(f"""
        from lsr1_core.runs.__main__ import main
        from lsr1_core.runs.catalog import available_models, hmr_models, model_form
        from lsr1_core.runs import read_metrics
        rc = main(["--root", {str(root)!r}, "list"])
        available_models({str(root)!r}); hmr_models([{str(root)!r}]); model_form({str(root / rid / 'best')!r})
        read_metrics({str(root / rid)!r})
        raise SystemExit(rc)
    """)
    t0 = time.time()
    try:
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=90, env=ENV)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a FIFO named {name} blocked 'runs list'")
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout and "bad" in out.stdout
    if name == "status.json":
        assert "FIFO" in out.stdout
    assert time.time() - t0 < 90
    # the lock is free, and the other runs still work
    assert RunManager(root).info("ok").state == "cancelled"


def test_a_fifo_log_fails_the_launch_instead_of_blocking(tmp_path):
    mgr = RunManager(tmp_path / "jobs", python=fake_python(tmp_path))
    rid = mgr.start(tiny(), run_id="r", launch=False)
    os.mkfifo(mgr.root / rid / "log.txt")
    mgr.schedule()
    info = mgr.info(rid)
    assert info.state == "failed" and "not a regular file" in info.error
    assert _launches(mgr.root / rid) == []


def test_runs_root_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert runs_main(["--root", str(f), "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "not a directory" in err


# -- 3: Ctrl-C never loses a metric line or changes the model ------------------------------------
_CHILD = """
import os, signal, sys
from lsr1_core.meta import train as mt
from lsr1_core import train
orig = mt.Trainer._write_metrics
def hooked(self, rec):
    if rec.get("iteration") == {at}:
        {action}
    return orig(self, rec)
mt.Trainer._write_metrics = hooked
sys.exit(train.main(sys.argv[1:]))
"""


def _train(tmp_path, args, at=None, action="pass"):
    code = _CHILD.format(at=at, action=action)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=ENV)


def _final_model(run: Path) -> dict:
    tensors, card = load_tensors_and_card(run / "latest", kind="lsr1-train-state")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.mark.parametrize("action", [
    "os.kill(os.getpid(), signal.SIGINT)",  # one Ctrl-C, arriving after the step, before its metric line
    "raise KeyboardInterrupt",  # a second Ctrl-C at that moment: quit at once
])
def test_ctrl_c_then_resume_loses_no_metric_line_and_gives_the_same_model(tmp_path, action):
    common = ["--preset", "quadratic", "--iterations", "6", "--no-progress", "--set", "batch=8", "--set", "unroll=2",
              "--set", "val_every=2", "--set", "ckpt_every=2", "--set", "model.hidden=8"]
    ref = _train(tmp_path, common + ["--run-dir", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    out = _train(tmp_path, common + ["--run-dir", str(tmp_path / "run")], at=3, action=action)
    assert out.returncode == 130, out.stderr
    assert "Traceback" not in out.stderr
    res = _train(tmp_path, ["--resume", str(tmp_path / "run"), "--no-progress"])
    assert res.returncode == 0, res.stderr
    its = [m["iteration"] for m in read_metrics(tmp_path / "run")]
    assert its == list(range(7)), its
    a, b = _final_model(tmp_path / "ref"), _final_model(tmp_path / "run")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


# -- 4: a status.json that cannot be written never leaves a worker behind ----------------------
@pytest.mark.parametrize("fail_from", [1, 2])  # every status write fails / only the one after the spawn
def test_a_status_write_failure_spawns_at_most_one_worker_and_kills_it(tmp_path, monkeypatch, fail_from):
    mgr = RunManager(tmp_path / "jobs", python=fake_python(tmp_path))
    rid = mgr.start(tiny(), run_id="r", launch=False)
    real = manager_mod.write_json
    calls = {"n": 0}

    def failing(path, obj):
        if Path(path).name == "status.json":
            calls["n"] += 1
            if calls["n"] >= fail_from:
                raise OSError(28, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(manager_mod, "write_json", failing)
    try:
        for _ in range(5):
            mgr.schedule()
        pids = _launches(mgr.root / rid)
        assert len(pids) <= (0 if fail_from == 1 else 1), pids
        time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "the spawned worker was left running"
    finally:
        _kill(_launches(mgr.root / rid))
    monkeypatch.setattr(manager_mod, "write_json", real)
    assert mgr.info(rid).state in ("queued", "interrupted", "failed")


# -- 6: a huge weights file is refused before it is hashed or read ------------------------------
def test_a_huge_sparse_weights_file_is_refused_in_milliseconds(tmp_path):
    from lsr1_core.learned import LSR1Config, LSR1Net
    from lsr1_core.learned.io import load_model, save_model
    save_model(tmp_path / "m", LSR1Net(LSR1Config.qn()))
    w = tmp_path / "m.safetensors"
    with open(w, "r+b") as fh:
        fh.truncate(3 << 30)  # 3 GB, sparse: its header now accounts for a tiny part of it
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="header accounts for"):
        read_checkpoint_bytes(tmp_path / "m")
    with pytest.raises(CheckpointError, match="header accounts for"):
        load_model(tmp_path / "m")
    assert time.perf_counter() - t0 < 2.0


# -- 7: damaged metric lines are skipped on resume ---------------------------------------------------
def test_resume_skips_damaged_metric_lines(tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(tiny(4), run).fit(progress=False)
    with open(run / "metrics.jsonl", "ab") as fh:
        fh.write(b'[1, 2]\n3\n"s"\nnull\n{"iteration": "2"}\n{"iteration": null}\n{"x": 1}\n\xff\xfe{"iteration": 1}\n{"iter')
    Trainer.resume(run, iterations=6).fit(progress=False)
    assert "damaged line" in capsys.readouterr().err
    assert [m["iteration"] for m in read_metrics(run)] == list(range(7))
    lines = (run / "metrics.jsonl").read_bytes().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_the_worker_resumes_a_run_with_damaged_metric_lines(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(4), run_id="r", launch=False)
    run = mgr.root / rid
    with open(run / "metrics.jsonl", "wb") as fh:
        fh.write(b'[0]\n{"iteration": "0"}\n\xff\n')
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert worker(str(run)) == 0
    finally:
        signal.signal(signal.SIGTERM, old)
    assert mgr.info(rid).state == "finished"
    assert [m["iteration"] for m in read_metrics(run)] == list(range(5))


# -- 8: command lines: one line on stderr, exit 2 ----------------------------------------------------
@pytest.mark.parametrize("argv", [["--dims", "abc"], ["--dims", ""], ["--dims", "10,-1"], ["--dims", "²"]])
def test_bench_bad_dims_are_refused_before_anything_runs(argv, capsys):
    from experiments import bench
    t0 = time.perf_counter()
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dims") and err.count("\n") == 1
    assert time.perf_counter() - t0 < 1


def test_train_huge_seed_and_distributed_without_torchrun_are_refused(tmp_path, capsys, monkeypatch):
    from lsr1_core import train
    assert train.main(["--preset", "quadratic", "--run-dir", str(tmp_path / "r"),
                       "--seed", "1180591620717411303424"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --seed") and err.count("\n") == 1
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert train.main(["--preset", "quadratic", "--run-dir", str(tmp_path / "r"), "--distributed"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "torchrun" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


# -- 14: booleans are booleans -------------------------------------------------------------------
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, [False]])
def test_card_booleans_given_as_anything_but_true_or_false_are_refused(tmp_path, value):
    from lsr1_core.learned import LSR1Config, LSR1Net
    from lsr1_core.learned.io import load_model, save_model
    d = LSR1Config.qn().to_dict()
    d["rescale_direction"] = value
    with pytest.raises(LSR1Error, match="rescale_direction.*true or false"):
        LSR1Config.from_dict(d)
    save_model(tmp_path / "m", LSR1Net(LSR1Config.qn()))
    card = json.loads((tmp_path / "m.json").read_text())
    card["config"]["rescale_direction"] = value
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="rescale_direction"):
        load_model(tmp_path / "m")
    with pytest.raises(LSR1Error, match="detach_gradient"):
        preset("quadratic", detach_gradient="false")


# -- 16: a worker is identified by its run's full path, not its name -----------------------------
def test_cancelling_a_copy_in_another_root_never_signals_the_original_worker(tmp_path):
    import shutil
    fake = fake_python(tmp_path)
    a = RunManager(tmp_path / "a", python=fake)
    rid = a.start(tiny(), run_id="r")
    try:
        for _ in range(100):
            if _launches(a.root / rid) and a.info(rid).state == "running":
                break
            time.sleep(0.05)
        (pid,) = _launches(a.root / rid)
        assert a.info(rid).state == "running"
        shutil.copytree(a.root / rid, tmp_path / "b" / rid)
        b = RunManager(tmp_path / "b", python=fake)
        assert b.info(rid).state == "interrupted"
        with pytest.raises(LSR1Error, match="interrupted"):
            b.cancel(rid)
        time.sleep(0.2)
        assert _alive(pid) and a.info(rid).state == "running"
    finally:
        _kill(_launches(a.root / rid))


# -- 17: header dtypes must be of the model's kind ---------------------------------------------------
def test_an_i64_header_over_float_weights_is_refused_although_the_hash_matches(tmp_path):
    import hashlib
    import struct
    from lsr1_core.learned import LSR1Config, LSR1Net
    from lsr1_core.learned.io import load_model, save_model
    save_model(tmp_path / "m", LSR1Net(LSR1Config.qn()).double())
    w = tmp_path / "m.safetensors"
    raw = w.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8:8 + n].replace(b'"F64"', b'"I64"')
    assert len(header) == n and b'"I64"' in header
    w.write_bytes(raw[:8] + header + raw[8 + n:])
    card = json.loads((tmp_path / "m.json").read_text())
    card["weights_sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="I64.*floating-point"):
        load_model(tmp_path / "m")


# -- 18: the old import keeps working ---------------------------------------------------------------
def test_checkpoints_load_model_still_imports_with_a_deprecation_warning():
    import lsr1_core.checkpoints as ck
    from lsr1_core.learned.io import load_model as new
    with pytest.warns(DeprecationWarning, match="lsr1_core.learned.io"):
        from lsr1_core.checkpoints import load_model
    assert load_model is new
    net, card = load_model(ROOT / "pretrained" / "qn_quadratic")
    assert card["kind"] == "lsr1"
    with pytest.raises(AttributeError):
        ck.no_such_name


# -- 21: a cancel right after a start; stale temporaries -------------------------------------------
def test_cancel_right_after_start_reports_cancelled(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(2000))  # the real worker is still importing torch: no SIGTERM handler yet
    assert mgr.info(rid).state == "running"
    assert mgr.cancel(rid, wait=60) == "cancelled"
    assert mgr.info(rid).state == "cancelled"
    assert mgr.resume(rid) in ("queued", "running")  # resumable; the cancel request is cleared
    assert mgr.cancel(rid, wait=120) == "cancelled"


def test_cancel_before_the_worker_marks_itself_running(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="r", launch=False)
    st = json.loads((mgr.root / rid / "status.json").read_text())
    st.update(state="running", cancel_requested=True)
    (mgr.root / rid / "status.json").write_text(json.dumps(st))
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert worker(str(mgr.root / rid)) == 0
    finally:
        signal.signal(signal.SIGTERM, old)
    assert mgr.info(rid).state == "cancelled"
    assert not (mgr.root / rid / "metrics.jsonl").exists()


def test_stale_status_temporaries_are_removed(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="r", launch=False)
    mgr.cancel(rid)
    old_tmp = mgr.root / rid / ".status.json.abc123.tmp"
    new_tmp = mgr.root / rid / ".status.json.def456.tmp"
    old_tmp.write_text("{")
    new_tmp.write_text("{")
    t = time.time() - 3600
    os.utime(old_tmp, (t, t))
    mgr.schedule()
    assert not old_tmp.exists() and new_tmp.exists()  # a fresh one may belong to a write in progress


# -- 5: the HMR page's disk cache: empty entries are rebuilt, writes are fsynced -----------------------
def test_empty_or_damaged_cache_entries_are_misses_that_get_rebuilt(tmp_path, monkeypatch):
    import numpy as np
    from explorer import hmr_cache as diskcache
    monkeypatch.setenv("LSR1_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(diskcache, "DAMAGED", [])
    for name, content in (("batch_k.safetensors", b""), ("fit_k.npz", b""), ("view_k.npz", b""),
                          ("batch_j.safetensors", b"\x08" + b"\0" * 7 + b"{}"), ("fit_j.npz", b"PK\x03\x04junk")):
        (tmp_path / name).write_bytes(content)
    # before the fix: SafetensorError and EOFError, a traceback on the page
    assert diskcache.load_batch("k") is None and diskcache.load_fit("k") is None
    assert diskcache.load_arrays("view", "k") is None
    assert diskcache.load_batch("j") is None and diskcache.load_fit("j") is None
    assert len(diskcache.DAMAGED) == 5 and not any(tmp_path.iterdir())  # recorded for the page, deleted
    assert diskcache.load_fit("missing") is None and len(diskcache.DAMAGED) == 5  # a plain miss is no damage
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    diskcache.save_arrays("view", "k", {"a": np.arange(3)})
    assert len(synced) >= 1  # before the fix: no fsync, so a crash could leave an empty entry
    np.testing.assert_array_equal(diskcache.load_arrays("view", "k")["a"], np.arange(3))
    assert not list(tmp_path.glob(".*.tmp"))



def test_a_latest_checkpoint_with_integer_model_weights_is_refused(tmp_path):
    import hashlib
    import struct
    run = tmp_path / "run"
    Trainer(tiny(2, ckpt_every=1, dtype="float64"), run).fit(progress=False)
    card_path = run / "latest.json"
    card = json.loads(card_path.read_text())
    w = run / card["weights_file"]
    raw = w.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = next(k for k, v in header.items() if k.startswith("model.") and v.get("dtype") == "F64")
    header[name]["dtype"] = "I64"
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    w.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
    card["weights_sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="I64"):
        Trainer.resume(run)
