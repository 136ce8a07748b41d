"""Benchmarks page: the comparison bench (issue 16, defect 5) and the training-run overlay."""
import json
import re
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from lsr1_core.viz.bench import BenchEntry, classical_entries, failure_rows, live_profiles, measure_rows

FAILED = re.compile(r"diverg|blew up|non-finite")  # the solver's own words for why it failed
APP = str(Path(__file__).resolve().parent.parent / "explorer" / "app.py")


def _bench_page(sidebar_models=None, tab="Comparison bench"):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/benchmarks.py").run()
    at.session_state["bm_tab"] = tab
    at.run()
    if sidebar_models is not None:
        at.multiselect(key="lsr1_models").set_value(sidebar_models).run()
    assert not at.exception
    return at


def test_live_profiles_keep_the_reason_of_each_failure():
    r = live_profiles(classical_entries(["adam"]) + [BenchEntry("L-SR1 quadratic", "lsr1", "pretrained/quadratic")],
                      steps=20, families=("rosenbrock",), dims=(50,))
    rows = failure_rows(r)
    assert rows and rows[0]["solver / model"] == "L-SR1 quadratic" and FAILED.search(rows[0]["reason"])
    assert measure_rows(r)[0]["L-SR1 quadratic"] == "failed"


def test_bench_uses_the_sidebar_models_and_shows_why_l_sr1_failed():
    at = _bench_page(["pretrained: quadratic_nosec"])
    assert at.multiselect(key="bm_models").value == ["pretrained: quadratic_nosec"]
    at.multiselect(key="bm_models").set_value(["pretrained: quadratic"])
    at.multiselect(key="bm_solvers").set_value(["Adam"])
    at.multiselect(key="bm_fams").set_value(["rosenbrock"])
    at.multiselect(key="bm_dims").set_value([50])
    at.slider(key="bm_steps").set_value(20)
    at.button(key="bm_run").click().run()
    assert not at.exception
    fig = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "L-SR1 quadratic" in c.proto.spec)
    assert any(t["name"].startswith("L-SR1 quadratic") for t in fig["data"])
    fails = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert list(fails["solver / model"]) == ["L-SR1 quadratic"] and FAILED.search(fails["reason"][0])
    table = next(d.value for d in at.dataframe if "problem" in d.value.columns and "reason" not in d.value.columns)
    assert "Infinity" not in table.to_string() and "inf" not in table.to_string()
    # a new run that cannot start removes the old result instead of leaving it under the error
    at.multiselect(key="bm_dims").set_value([])
    at.button(key="bm_run").click().run()
    assert any("dimension" in e.value for e in at.error)
    assert not any("L-SR1 quadratic" in c.proto.spec for c in at.get("plotly_chart"))


def test_training_runs_overlay_on_log_scales(tmp_path, monkeypatch):
    root = tmp_path / "jobs"
    monkeypatch.setenv("LSR1_RUNS_ROOT", str(root))
    for name, f in (("a", 1.0), ("b", 3.0)):
        d = root / name
        d.mkdir(parents=True)
        (d / "status.json").write_text(json.dumps({"state": "finished"}))
        (d / "metrics.jsonl").write_text("\n".join(json.dumps({"iteration": i, "val_loss": f / i, "meta_loss": f / i})
                                                   for i in range(1, 40)) + "\n")
    at = _bench_page(tab="Training runs overlaid")
    assert at.multiselect(key="bm_runs").value == ["a", "b"]
    fig = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
               if '"a"' in c.proto.spec and '"b"' in c.proto.spec)
    assert fig["layout"]["yaxis"]["type"] == "log" and len(fig["data"]) == 2
