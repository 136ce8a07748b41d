"""One runs root (lsr1_core.runs.root) for the Meta-training page, the model catalog and the sidebar."""
import json

from lsr1_core.runs.catalog import available_models
from lsr1_core.runs.root import runs_root


def _run(root, name, state):
    d = root / name
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"state": state}))
    (d / "best.json").write_text("{}")


def test_runs_root_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("LSR1_RUNS_ROOT", raising=False)
    assert str(runs_root()) == "runs/jobs"
    monkeypatch.setenv("LSR1_RUNS_ROOT", str(tmp_path / "elsewhere"))
    assert runs_root() == tmp_path / "elsewhere"


def test_catalog_lists_runs_of_the_one_root_and_leaves_out_failed_and_cancelled(tmp_path, monkeypatch):
    root = tmp_path / "jobs"
    monkeypatch.setenv("LSR1_RUNS_ROOT", str(root))
    _run(root, "good", "finished")
    _run(root, "broken", "failed")
    _run(root, "stopped", "cancelled")
    labels = list(available_models())
    assert "run: good" in labels
    assert "run: broken" not in labels and "run: stopped" not in labels


def test_the_sidebar_and_the_training_page_use_the_same_root(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from pathlib import Path
    root = tmp_path / "jobs"
    monkeypatch.setenv("LSR1_RUNS_ROOT", str(root))
    _run(root, "mine", "finished")
    app = str(Path(__file__).resolve().parent.parent / "explorer" / "app.py")
    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("views/trajectories.py").run()
    # options are shown with their form ("run: mine · paper form")
    assert any(o.startswith("run: mine") for o in at.multiselect(key="lsr1_models").options)
    from explorer.views import training
    assert training.runs_root_dir() == root


def test_the_command_line_lists_the_one_root(tmp_path, monkeypatch, capsys):
    from lsr1_core.runs.__main__ import main
    root = tmp_path / "jobs"
    monkeypatch.setenv("LSR1_RUNS_ROOT", str(root))
    _run(root, "cli_run", "finished")
    (root / "cli_run" / "config.json").write_text(json.dumps({"iterations": 1}))
    main(["list"])
    assert "cli_run" in capsys.readouterr().out
