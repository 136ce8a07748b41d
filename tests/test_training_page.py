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
