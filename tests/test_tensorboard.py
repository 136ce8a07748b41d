"""Every run writes TensorBoard event files beside metrics.jsonl (issue 25, part 4): read back with
TensorBoard's own EventAccumulator, they hold every number of every metric line, at its iteration, once —
also after a crash and a resume that redoes iterations; a failure to write them never breaks the run."""
from __future__ import annotations

import json
import signal

import pytest

from lsr1_core.meta import preset, registry
from lsr1_core.meta.train import Trainer
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.runs.manager import worker
from lsr1_core.runs.tensorboard import EventLog, scalar_tag, scalars

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def tiny(iterations=6, **kw):
    base = dict(iterations=iterations, val_every=2, ckpt_every=2, batch=8, unroll=2, model={"hidden": 8})
    base.update(kw)
    return preset("quadratic", **base)


def _events(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_every_metric_is_there(run_dir):
    metrics = read_metrics(run_dir)
    assert metrics, "no metric line"
    events = _events(run_dir)
    expected: dict[str, list[tuple[int, float]]] = {}
    for rec in metrics:
        for key, v in rec.items():
            if key == "iteration" or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            expected.setdefault(scalar_tag(key), []).append((rec["iteration"], float(v)))
    assert sorted(events) == sorted(expected)
    for tag, pairs in expected.items():
        got = events[tag]
        assert [s for s, _ in got] == [s for s, _ in pairs], tag  # every iteration once, in order
        for (_, v), (_, w) in zip(got, pairs):
            assert v == pytest.approx(w, rel=1e-6, abs=1e-30), tag  # stored as float32
    return metrics, events


def test_a_run_writes_every_metric_line_to_tensorboard(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="tb")
    info = mgr.wait(rid, timeout=180)
    assert info.state == "finished", info.error
    assert list(info.path.glob("events.out.tfevents.*"))
    metrics, events = _assert_every_metric_is_there(info.path)
    # the curves the issue names: the meta-loss, validation and the secant statistics
    assert "train/meta_loss" in events and "val/loss" in events
    assert any("secant" in tag for tag in events), sorted(events)
    assert len(events["train/meta_loss"]) == 6 and events["val/loss"][0][0] == 0
    assert "tensorboard_error" not in json.loads((info.path / "status.json").read_text())


def _restore_sigterm():
    old = signal.getsignal(signal.SIGTERM)
    return lambda: signal.signal(signal.SIGTERM, old)


def test_a_crash_and_resume_leave_each_step_once(tmp_path):
    """Iterations past the latest checkpoint are redone after a crash; the new event file purges the old
    file's values of those steps, as the trainer drops their metric lines."""
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(iterations=8, ckpt_every=4), run_id="r", launch=False)
    path = mgr.root / rid
    kind = registry.get("lsr1")
    events = EventLog(path)

    class Crash(Exception):
        pass

    def log(rec):
        events(rec)
        if rec["iteration"] == 6:
            raise Crash  # the process dies after iteration 6's line; the latest checkpoint is at 4

    tr = Trainer.resume(path, problem=kind.problem, config_class=registry.trainer_config_class(kind), log=log)
    with pytest.raises(Crash):
        tr.fit(progress=False, fresh=False)
    events.close()
    assert json.loads((path / "latest.json").read_text())["iteration"] == 4
    assert len(_events(path)["train/meta_loss"]) == 6  # steps 1..6 were written before the crash
    restore = _restore_sigterm()
    try:
        assert worker(str(path)) == 0
    finally:
        restore()
    assert [m["iteration"] for m in read_metrics(path)] == list(range(9))
    assert len(list(path.glob("events.out.tfevents.*"))) == 2
    _assert_every_metric_is_there(path)


def test_a_failure_to_write_event_files_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    from torch.utils.tensorboard import SummaryWriter

    def full_disk(self, *a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="f", launch=False)
    restore = _restore_sigterm()
    try:
        assert worker(str(mgr.root / rid)) == 0
    finally:
        restore()
    info = mgr.info(rid)
    assert info.state == "finished" and info.iteration == 6
    st = json.loads((info.path / "status.json").read_text())
    assert "No space left on device" in st["tensorboard_error"]
    assert "TensorBoard event files are no longer written" in capsys.readouterr().err


def test_scalars_take_numbers_only():
    rec = {"iteration": 3, "meta_loss": 1.5, "grad_norm": 2, "best": True, "skipped": False, "val_loss": None,
           "elapsed_s": 0.1, "val_secant": 0.25, "note": "x"}
    assert scalars(rec) == {"train/meta_loss": 1.5, "train/grad_norm": 2.0, "time/elapsed_s": 0.1,
                            "val/secant": 0.25}
