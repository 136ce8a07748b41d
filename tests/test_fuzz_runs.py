"""Property-based fuzzing (hypothesis) of the run-state files (issue 14): whatever bytes or JSON values
status.json, config.json and metrics.jsonl hold, listing, showing and cancelling runs and reading their
metrics and config give a valid answer or an ``LSR1Error``; never another exception, and the other runs in
the same root are still listed."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr1_core.errors import LSR1Error
from lsr1_core.meta import preset
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.runs.__main__ import main as runs_main
from lsr1_core.runs.catalog import available_models
from lsr1_core.runs.manager import STATES, read_config

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=10)
keys = st.sampled_from(["state", "pid", "pid_start", "error", "created", "preset", "total", "iteration",
                        "iterations", "elapsed_s", "val_loss", "model", "lr", "task", "betas"])
objects = st.dictionaries(keys, json_values, max_size=6)


def _file_contents():
    as_json = (json_values | objects).map(lambda v: json.dumps(v).encode())
    lines = st.lists(json_values | objects, max_size=5).map(
        lambda vs: "\n".join(json.dumps(v) for v in vs).encode())
    return st.one_of(st.binary(max_size=200), as_json, lines, as_json.map(lambda b: b[: len(b) // 2]))


CFG = preset("quadratic", iterations=3, batch=8, unroll=2, model={"hidden": 8})


def _check_root(root, capsys):
    mgr = RunManager(root)
    runs = {r.run_id: r for r in mgr.list()}
    assert {"good", "bad"} <= set(runs)  # neither the damaged run nor its neighbour vanishes
    for r in runs.values():
        assert r.state in STATES and isinstance(r.iteration, int) and isinstance(r.total, int)
        assert r.error is None or isinstance(r.error, str)
        assert 0.0 <= r.progress <= 1.0
        assert r.best_val is None or isinstance(r.best_val, float)
    assert runs["good"].state == "cancelled"
    assert runs_main(["--root", str(root), "show", "bad"]) == 0
    for m in read_metrics(root / "bad"):
        assert isinstance(m, dict) and isinstance(m["iteration"], int)
    try:
        read_config(root / "bad")
    except LSR1Error:
        pass
    if runs["bad"].state == "queued":
        assert mgr.cancel("bad") == "cancelled"
    else:
        try:
            mgr.cancel("bad")
        except LSR1Error:
            pass
    # `list` schedules queued runs: only after the damaged run was cancelled (no worker is ever started here)
    assert runs_main(["--root", str(root), "list"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert not (root / "bad" / "log.txt").exists()
    available_models(root, root / "no-pretrained")


@FUZZ
@given(st.sampled_from(["status.json", "config.json", "metrics.jsonl"]), _file_contents())
def test_fuzz_one_run_file(tmp_path_factory, capsys, name, content):
    root = tmp_path_factory.mktemp("jobs")
    mgr = RunManager(root)
    mgr.start(CFG, run_id="good", launch=False)
    mgr.cancel("good")
    mgr.start(CFG, run_id="bad", launch=False)
    (root / "bad" / name).write_bytes(content)
    _check_root(root, capsys)


@FUZZ
@given(objects, objects, st.lists(objects, max_size=4))
def test_fuzz_all_run_files_as_json_objects(tmp_path_factory, capsys, status, config, metrics):
    root = tmp_path_factory.mktemp("jobs")
    mgr = RunManager(root)
    mgr.start(CFG, run_id="good", launch=False)
    mgr.cancel("good")
    mgr.start(CFG, run_id="bad", launch=False)
    (root / "bad" / "status.json").write_text(json.dumps(status))
    (root / "bad" / "config.json").write_text(json.dumps(config))
    (root / "bad" / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
    _check_root(root, capsys)
