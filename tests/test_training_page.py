import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from pathlib import Path

PAGE = str(Path(__file__).resolve().parent.parent / "explorer" / "views" / "training.py")


@pytest.fixture
def page_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LSR1_RUNS_ROOT", str(tmp_path / "jobs"))
    monkeypatch.setenv("LSR1_REFRESH_S", "3600")
    return tmp_path / "jobs"


def _fill_tiny(at, name="tiny"):
    at.number_input(key="train_K").set_value(4)
    at.number_input(key="train_batch").set_value(16)
    at.number_input(key="train_iters").set_value(12)
    at.select_slider(key="train_hidden").set_value(16)
    at.text_input(key="train_name").set_value(name)


@pytest.mark.slow
def test_page_launches_a_tiny_run_and_sees_it_finish(page_env):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)
    _fill_tiny(at)
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert any("Started run tiny" in s.value for s in at.success)
    status = page_env / "tiny" / "status.json"
    deadline = time.time() + 180
    while time.time() < deadline and json.loads(status.read_text())["state"] in ("queued", "running"):
        time.sleep(0.2)
    assert json.loads(status.read_text())["state"] == "finished"
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["status"]) == ["finished"] and list(table["iteration"]) == ["12/12"]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t.get("name") for t in chart["data"]]
    assert "training meta-loss" in names and "validation meta-loss" in names
    train = next(t for t in chart["data"] if t["name"] == "training meta-loss")
    assert len(train["x"]) == 12 and train["x"][-1] == 12


def test_page_rejects_impossible_settings(page_env):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.number_input(key="train_batch").set_value(16)
    at.text_input(key="train_name").set_value("../evil")
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert any("Not launched" in e.value and "run id" in e.value for e in at.error)
    at.text_input(key="train_name").set_value("ok")
    at.selectbox(key="train_device").set_value("cuda")
    at.button(key="train_launch").click().run()
    import torch
    if not torch.cuda.is_available():
        assert any("CUDA is not available" in e.value for e in at.error)


# --- issue 16, defect 4 --------------------------------------------------------------------------------------
def test_choosing_a_preset_loads_its_values_into_the_form(page_env):
    from lsr1_core.meta.presets import preset
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.selectbox(key="train_preset").set_value("profile_rosenbrock").run()
    assert not at.exception
    c = preset("profile_rosenbrock")
    assert at.number_input(key="train_n").value == c.n == 100
    assert at.number_input(key="train_K").value == c.unroll
    assert at.number_input(key="train_batch").value == c.batch
    assert at.number_input(key="train_lsec").value == c.secant_weight
    assert at.number_input(key="train_g1").value == pytest.approx(c.model.gamma1)
    assert at.number_input(key="train_L").value == c.model.memory


@pytest.fixture
def no_launch(monkeypatch):
    """Runs are created (queued) but no process starts."""
    from lsr1_core.runs.manager import RunManager
    monkeypatch.setattr(RunManager, "schedule", lambda self: None)


def test_invalid_fields_are_named_and_block_launch(page_env, no_launch):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    for key, bad in (("train_n", 0), ("train_K", -3), ("train_iters", 0), ("train_lr", 0.0), ("train_batch", 100_000)):
        at.number_input(key=key).set_value(bad)
    at.run()
    msg = " ".join(e.value for e in at.error)
    for label in ("N (dimension)", "K (unrolled steps)", "iterations", "meta learning rate", "batch"):
        assert label in msg, label
    assert at.button(key="train_launch").disabled
    assert not page_env.exists() or not any(page_env.iterdir())


def test_launch_starts_the_values_shown_and_watch_follows_it(page_env, no_launch):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    _fill_tiny(at, "first")
    at.button(key="train_launch").click().run()
    assert at.selectbox(key="train_watch").value == "first"
    at.number_input(key="train_K").set_value(5)
    at.text_input(key="train_name").set_value("second")
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert at.selectbox(key="train_watch").value == "second"
    cfg = json.loads((page_env / "second" / "config.json").read_text())
    assert cfg["unroll"] == 5 and cfg["batch"] == 16 and cfg["iterations"] == 12


def test_runs_are_listed_newest_first(page_env):
    for name, created in (("zeta", "2026-01-01T00:00:00"), ("alpha", "2026-06-01T00:00:00")):
        d = page_env / name
        d.mkdir(parents=True)
        (d / "status.json").write_text(json.dumps({"state": "finished", "created": created}))
        (d / "config.json").write_text(json.dumps({"iterations": 1}))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert list(at.dataframe[0].value["run"]) == ["alpha", "zeta"]


# --- issue 16: HMR presets ------------------------------------------------------------------------------------
def test_hmr_presets_are_offered_and_load_their_values(page_env):
    from lsr1_core.hmr.presets import hmr_preset
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert {"hmr_lsr1", "hmr_lsr1_nosec", "hmr_lgd"} <= set(at.selectbox(key="train_preset").options)
    at.selectbox(key="train_preset").set_value("hmr_lgd").run()
    assert not at.exception
    c = hmr_preset("hmr_lgd")
    assert at.number_input(key="train_K").value == c.unroll == 4
    assert at.number_input(key="train_batch").value == c.batch
    assert at.number_input(key="train_val").value == c.val_size
    assert at.number_input(key="train_lsec").disabled  # LGD has no secant term
    assert not any(w.key == "train_n" for w in at.number_input)  # no N, L, γ for HMR
    at.selectbox(key="train_preset").set_value("hmr_lsr1_nosec").run()
    assert at.number_input(key="train_lsec").value == 0.0 and not at.number_input(key="train_lsec").disabled


def test_hmr_launch_starts_the_values_shown(page_env, no_launch):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.selectbox(key="train_preset").set_value("hmr_lsr1").run()
    at.number_input(key="train_K").set_value(2)
    at.number_input(key="train_iters").set_value(3)
    at.number_input(key="train_val").set_value(0).run()
    assert "validation samples" in " ".join(e.value for e in at.error) and at.button(key="train_launch").disabled
    at.number_input(key="train_val").set_value(4).run()
    at.text_input(key="train_name").set_value("mesh")
    at.button(key="train_launch").click().run()
    assert not at.exception
    cfg = json.loads((page_env / "mesh" / "config.json").read_text())
    assert cfg["stage"] == "update" and cfg["method"] == "lsr1" and cfg["unroll"] == 2 and cfg["iterations"] == 3
    assert cfg["val_size"] == 4 and cfg["initializer"].endswith("hmr_lsr1")
    assert at.selectbox(key="train_watch").value == "mesh"
    assert list(at.dataframe[0].value["task"]) == ["HMR"]


def test_a_finished_hmr_run_shows_its_validation_pa_mpjpe(page_env):
    from lsr1_core.hmr.presets import hmr_preset
    d = page_env / "mesh"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(hmr_preset("hmr_lgd", iterations=2).to_dict()))
    (d / "status.json").write_text(json.dumps({"state": "finished", "created": "2026-01-01T00:00:00",
                                               "preset": "hmr_lgd"}))
    recs = [{"iteration": i, "meta_loss": 1.0 / (i + 1), "val_loss": 80.0 - i, "val_pa_mpjpe": 80.0 - i,
             "val_meta_loss": 2.0 / (i + 1)} for i in range(3)]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert list(at.dataframe[0].value["task"]) == ["HMR"]
    hmr_table = at.dataframe[1].value
    assert list(hmr_table["run"]) == ["mesh"] and list(hmr_table["best validation PA-MPJPE (mm)"]) == [78.0]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    pa = next(t for t in chart["data"] if t.get("name") == "validation PA-MPJPE (mm)")
    assert list(pa["x"]) == [0, 1, 2] and list(pa["y"]) == [80.0, 79.0, 78.0]


@pytest.mark.slow
def test_page_launches_a_tiny_hmr_run_and_sees_it_finish(page_env):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.selectbox(key="train_preset").set_value("hmr_lsr1").run()
    for key, value in (("train_K", 1), ("train_batch", 2), ("train_iters", 2), ("train_val", 4)):
        at.number_input(key=key).set_value(value)
    at.text_input(key="train_name").set_value("mesh")
    at.button(key="train_launch").click().run()
    assert any("Started run mesh" in s.value for s in at.success)
    status = page_env / "mesh" / "status.json"
    deadline = time.time() + 300
    while time.time() < deadline and json.loads(status.read_text())["state"] in ("queued", "running"):
        time.sleep(0.2)
    assert json.loads(status.read_text())["state"] == "finished", (page_env / "mesh" / "log.txt").read_text()[-2000:]
    at.run()
    assert not at.exception
    assert list(at.dataframe[1].value["run"]) == ["mesh"]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    pa = next(t for t in chart["data"] if t.get("name") == "validation PA-MPJPE (mm)")
    assert list(pa["x"]) == [0, 1, 2] and all(0 < y < 1000 for y in pa["y"])
