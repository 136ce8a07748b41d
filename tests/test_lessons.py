"""The lessons of Curvature & secant: "Anatomy of one update" and "Why PSD matters, drawn" (issue 16)."""
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lsr1_core.objectives import teaching_function
from explorer.catalog import default_specs
from lsr1_core.viz.explore import run_2d
from lsr1_core.viz.lessons import anatomy, anatomy_figure, psd_comparison, psd_figure, secant_verdict

APP = str(Path(__file__).resolve().parent.parent / "explorer" / "app.py")


@pytest.fixture(scope="module")
def quad():
    specs = default_specs("quadratic")
    r = run_2d("quadratic", {"cond": 10.0, "angle": 30.0}, (-2.5, 1.5),
               [specs["SR1 (classical)"], specs["L-BFGS"], specs["Gradient descent"]], 10, 8)
    return r, teaching_function("quadratic", cond=10.0, angle=30.0)


def test_anatomy_secant_satisfied_for_quasi_newton_violated_for_gradient_descent(quad):
    r, obj = quad
    for lab in ("SR1 (classical)", "L-BFGS"):
        a = anatomy(r.traces[lab], obj, 2)
        np.testing.assert_allclose(a["Bq_next"], a["p"], rtol=1e-8, atol=1e-12)
        assert secant_verdict(a).startswith("Satisfied")
    a = anatomy(r.traces["Gradient descent"], obj, 2)
    assert a["residual"] > 0.1 and secant_verdict(a).startswith("Violated")
    # the SR1 rank-one term makes B_k + w wᵀ/(wᵀq) satisfy the secant condition by construction
    np.testing.assert_allclose(a["B_sr1"] @ a["q"], a["p"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(a["w"], a["p"] - a["B"] @ a["q"])


def test_anatomy_figure_draws_the_step_the_check_and_three_ellipses(quad):
    r, obj = quad
    fig = anatomy_figure(obj, anatomy(r.traces["L-BFGS"], obj, 2), "L-BFGS").to_dict()
    names = [t.get("name") or "" for t in fig["data"]]
    assert any(n.startswith("Newton's H⁻¹") for n in names)
    assert any(n.startswith("Bₖ₊₁ (") for n in names) and any(n.startswith("Bₖ (") for n in names)
    step = next(t for t in fig["data"] if (t.get("name") or "").startswith("p = "))
    check = next(t for t in fig["data"] if (t.get("name") or "").startswith("Bₖ₊₁q drawn"))
    np.testing.assert_allclose(np.asarray(check["x"])[-1], np.asarray(step["x"])[-1], atol=1e-9)


def test_psd_comparison_sr1_goes_uphill_lsr1_starts_downhill():
    ex = psd_comparison("himmelblau", checkpoint="pretrained/quadratic", step_scale=0.1)
    assert ex is not None and ex["eig"][0] < 0
    assert float(ex["g"] @ ex["sr1_d"]) < 0 and ex["sr1_f"] > ex["f"]
    assert float(ex["g"] @ ex["lsr1_d"]) > 0
    fig = psd_figure(teaching_function("himmelblau"), ex, "L-SR1 quadratic").to_dict()
    names = " ".join(t.get("name") or "" for t in fig["data"])
    assert "classical SR1" in names and "L-SR1 quadratic" in names and "uphill side" in names


def test_curvature_page_has_both_lessons():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/curvature.py").run()
    at.multiselect(key="cv_solvers").set_value(["SR1 (classical)", "Gradient descent", "L-BFGS"])
    at.session_state["cv_tab"] = "Anatomy of one update"
    at.run()
    assert not at.exception
    assert at.selectbox(key="an_who").value == "SR1 (classical)"
    assert any(s.value.startswith("Satisfied") for s in at.success)
    assert any("black, Newton" in m.value for m in at.markdown)  # one line per ellipse
    at.selectbox(key="an_who").set_value("Gradient descent").run()
    assert any(w.value.startswith("Violated") for w in at.warning)
    at.session_state["cv_tab"] = "Why PSD matters"
    at.run()
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert any("uphill side" in json.dumps(c["data"]) for c in charts)
    assert any("goes uphill" in l.value for l in at.latex)


def test_step_scale_in_the_sidebar_reaches_l_sr1():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/trajectories.py").run()
    assert any("Step scale" in c.value for c in at.sidebar.caption)
    lsr1 = [o for o in at.multiselect(key="tr_solvers").options if o.startswith("L-SR1")]
    at.multiselect(key="tr_solvers").set_value(lsr1[:1])
    at.selectbox(key="tr_fn").set_value("quadratic").run()
    x_full = _player_x(at)
    at.select_slider(key="lsr1_scale").set_value(0.5).run()
    assert not at.exception and not at.error
    x_half = _player_x(at)
    p_full = np.array(x_full[1]) - np.array(x_full[0])
    p_half = np.array(x_half[1]) - np.array(x_half[0])
    np.testing.assert_allclose(p_half, 0.5 * p_full, rtol=1e-6)


def _player_x(at):
    comps = [c for c in at.get("component_instance") if c.proto.component_name.endswith("trajectory_player")]
    s = json.loads(comps[0].proto.json_args)["spec"]["solvers"][0]
    return list(zip(s["x"], s["y"]))
