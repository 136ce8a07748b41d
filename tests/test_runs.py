import json
import os
import signal
import time

import pytest
import torch

from lsr1_core.checkpoints import load_tensors_and_card
from lsr1_core.errors import LSR1Error
from lsr1_core.meta import Trainer, preset
from lsr1_core.runs import RunManager, read_metrics


def tiny(iterations=30, **kw):
    base = dict(iterations=iterations, val_every=10, ckpt_every=5, batch=16, unroll=4, model={"hidden": 8})
    base.update(kw)
    return preset("quadratic", **base)


def _model_tensors(path):
    tensors, card = load_tensors_and_card(path / "latest", kind="lsr1-train-state")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}, card


def _assert_same_as_uninterrupted(tmp_path, cfg, run_path):
    """Same batches, same losses, same parameters — up to floating-point nondeterminism (thread counts
    differ between processes; Adam turns reduction-order noise in near-zero gradients into steps of up
    to lr, so parameters are compared to 2·lr·iterations while losses must agree to 1e-4)."""
    tr = Trainer(cfg, tmp_path / "reference")
    tr.fit(progress=False)
    ref_loss = {m["iteration"]: m["meta_loss"] for m in read_metrics(tmp_path / "reference") if "meta_loss" in m}
    got_loss = {m["iteration"]: m["meta_loss"] for m in read_metrics(run_path) if "meta_loss" in m}
    assert sorted(got_loss) == sorted(ref_loss) == list(range(1, cfg.iterations + 1))
    for it, v in ref_loss.items():
        assert abs(got_loss[it] - v) <= 1e-4 * max(1.0, abs(v)), (it, got_loss[it], v)
    got, _ = _model_tensors(run_path)
    for k, v in tr.net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            assert torch.equal(got[f"model.{k}"], v)
            continue
        assert torch.allclose(got[f"model.{k}"].double(), v.double(), atol=2 * cfg.lr * cfg.iterations, rtol=1e-3), k


def _wait_for_iteration(mgr, rid, it, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = mgr.info(rid)
        if info.iteration >= it or info.state not in ("running", "queued"):
            return info
        time.sleep(0.05)
    raise TimeoutError


@pytest.mark.slow
def test_job_runs_to_completion_and_queue_respects_the_limit(tmp_path):
    mgr = RunManager(tmp_path / "jobs", max_concurrent=1)
    a = mgr.start(tiny(20), preset_name="quadratic", run_id="a")
    b = mgr.start(tiny(20), preset_name="quadratic", run_id="b")
    assert mgr.info(a).state == "running"
    assert mgr.info(b).state == "queued"
    assert mgr.wait(a, timeout=180).state == "finished"
    assert mgr.wait(b, timeout=180).state == "finished"  # started by a's worker on exit
    m = read_metrics(mgr.info(a).path)
    assert m[-1]["iteration"] == 20 and "val_loss" in m[-1]
    assert mgr.info(a).best_val is not None


@pytest.mark.slow
def test_cancel_then_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = tiny(60)
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(cfg, run_id="c")
    _wait_for_iteration(mgr, rid, 12)
    state = mgr.cancel(rid, wait=60)
    assert state == "cancelled"
    info = mgr.info(rid)
    assert 12 <= info.iteration < 60
    _, card = _model_tensors(info.path)
    assert card["iteration"] == info.iteration  # checkpointed at the stop, nothing lost
    assert mgr.resume(rid) in ("running", "finished")
    assert mgr.wait(rid, timeout=180).state == "finished"
    _assert_same_as_uninterrupted(tmp_path, cfg, info.path)


@pytest.mark.slow
def test_sigkill_leaves_a_run_that_loads_and_resumes(tmp_path):
    cfg = tiny(60)
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(cfg, run_id="k")
    _wait_for_iteration(mgr, rid, 17)
    pid = json.loads((mgr.info(rid).path / "status.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while mgr.info(rid).state == "running" and time.time() < deadline:
        time.sleep(0.05)
    info = mgr.info(rid)
    assert info.state == "interrupted"
    _, card = _model_tensors(info.path)  # loads: the hash check passes
    assert card["iteration"] % 5 == 0 and card["iteration"] >= 15  # lost at most the work since the checkpoint
    mgr.resume(rid)
    assert mgr.wait(rid, timeout=180).state == "finished"
    metrics = read_metrics(info.path)
    its = [m["iteration"] for m in metrics]
    assert its == sorted(set(its)) and its[-1] == 60  # no duplicated or missing iterations
    _assert_same_as_uninterrupted(tmp_path, cfg, info.path)


def test_bad_requests_give_clear_errors(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(5), run_id="q", launch=False)
    with pytest.raises(LSR1Error, match="already exists"):
        mgr.start(tiny(5), run_id="q", launch=False)
    with pytest.raises(LSR1Error, match="only queued or running"):
        mgr.cancel(rid) and mgr.cancel(rid)
    with pytest.raises(LSR1Error, match="no run"):
        mgr.info("missing")
    with pytest.raises(LSR1Error, match="invalid run id"):
        mgr.info("../etc")
    (tmp_path / "jobs" / "q" / "status.json").write_text("{corrupt")
    info = mgr.info("q")  # shown as failed with the reason (it used to vanish from list()), never a traceback
    assert info.state == "failed" and "status.json is missing or corrupted" in info.error
    assert [r.run_id for r in mgr.list()] == ["q"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LSR1Error, match="cannot write"):
        RunManager(blocker / "jobs").start(tiny(5))
    with pytest.raises(LSR1Error, match="max_concurrent"):
        RunManager(tmp_path, max_concurrent=0)
