"""AppTest tests per page: drive the main widgets and assert on the figures' data."""
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "explorer" / "app.py")


def _decode(obj):
    """Plotly ≥ 6 writes numeric arrays as {"dtype", "bdata"}; turn them back into lists."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            import base64
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            shape = obj.get("shape")
            if isinstance(shape, str):
                shape = tuple(int(v) for v in shape.split(","))
            return arr.reshape(shape).tolist() if shape else arr.tolist()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def _charts(at):
    return [_decode(json.loads(c.proto.spec)) for c in at.get("plotly_chart")]


def _page(name, **env):
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, at.exception
    return at


def test_home_page_explains_the_method():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("secant condition" in m.value for m in at.markdown)


def test_trajectories_page_draws_one_path_per_solver():
    at = _page("trajectories")
    at.multiselect(key="tr_solvers").set_value(["Gradient descent", "Newton", "L-BFGS"])
    at.slider(key="tr_steps").set_value(20)
    at.selectbox(key="tr_fn").set_value("quadratic").run()
    assert not at.exception
    traj, obj = _charts(at)[:2]
    paths = [t for t in traj["data"] if t.get("mode") == "lines+markers"]
    assert len(paths) == 3
    newton = next(t for t in paths if t["name"].startswith("Newton"))
    # Newton solves the quadratic in one step: its path ends at the minimiser (0, 0)
    assert abs(newton["x"][-1]) < 1e-9 and abs(newton["y"][-1]) < 1e-9
    assert len(traj["frames"]) == 21  # one frame per step, 0..20
    assert obj["layout"]["yaxis"]["type"] == "log"
    gd = next(t for t in obj["data"] if t["name"] == "Gradient descent")
    assert len(gd["y"]) == 21 and gd["y"][-1] < gd["y"][0]
    # moving the step control moves the highlighted point
    at.slider(key="main_step").set_value(1).run()
    traj = _charts(at)[0]
    newton = next(t for t in traj["data"] if t.get("mode") == "lines+markers" and t["name"].startswith("Newton"))
    assert len(newton["x"]) == 2


def test_trajectories_page_reports_bad_settings_and_divergence():
    at = _page("trajectories")
    at.multiselect(key="tr_solvers").set_value(["Gradient descent"])
    at.selectbox(key="tr_fn").set_value("quadratic").run()
    at.number_input(key="tr_sx").set_value(50.0).run()
    assert any("outside the plotted range" in e.value for e in at.error)
    at.number_input(key="tr_sx").set_value(-2.0).run()
    at.number_input(key="tr_mem").set_value(0).run()
    assert any("buffer size" in e.value for e in at.error)
    at.number_input(key="tr_mem").set_value(8).run()
    at.number_input(key="tr_lr_Gradient descent").set_value(50.0).run()
    assert not at.exception
    assert any("diverged" in w.value.lower() for w in at.warning)
    traj = _charts(at)[0]
    gd = next(t for t in traj["data"] if t.get("mode") == "lines+markers")
    assert "diverged at step" in gd["name"]


def test_curvature_page_shows_cosines_secant_and_spectra():
    at = _page("curvature")
    at.multiselect(key="cv_solvers").set_value(["SR1 (classical)", "L-BFGS", "Newton"])
    at.slider(key="cv_steps").set_value(10).run()
    assert not at.exception
    charts = _charts(at)
    cos = charts[0]
    newton = next(t for t in cos["data"] if t["name"] == "Newton")
    assert np.allclose([v for v in newton["y"] if v is not None][:1], 1.0)  # Newton is its own direction
    sec = charts[1]
    sr1 = next(t for t in sec["data"] if t["name"] == "SR1 (classical)")
    assert sr1["y"][2] < 1e-6  # on a quadratic, SR1 satisfies the secant equation after its updates
    spectra = charts[2]
    assert {t["name"] for t in spectra["data"]} >= {"eig true H⁻¹(x_k)"}
    assert any("Secant equation" in m.value for m in at.markdown)
    assert len(at.latex) >= 1


def test_curvature_step_slider_moves_the_secant_panel():
    from explorer.views import curvature
    assert hasattr(curvature.two_d_step_view, "__wrapped__") or "fragment" in repr(curvature.two_d_step_view).lower()
    at = _page("curvature")
    at.multiselect(key="cv_solvers").set_value(["SR1 (classical)", "Newton"])
    at.slider(key="cv_steps").set_value(10).run()
    at.slider(key="cv_step").set_value(5).run()
    assert not at.exception
    assert any("Secant equation at step 5" in m.value for m in at.markdown)
    at.slider(key="cv_step").set_value(2).run()
    assert any("Secant equation at step 2" in m.value for m in at.markdown)
    assert not any("Secant equation at step 5" in m.value for m in at.markdown)


def test_curvature_psd_lesson_finds_an_uphill_sr1_step():
    at = _page("curvature")
    assert any("goes uphill" in l.value for l in at.latex)


def test_benchmarks_page_shows_precomputed_results():
    at = _page("benchmarks")
    charts = _charts(at)
    assert len(charts) >= 2
    prof = charts[0]
    assert any("L-BFGS" in t["name"] for t in prof["data"])
    assert all(0 <= v <= 1 for t in prof["data"] for v in t["y"])


def test_trajectories_exports_hold_every_step_of_every_solver():
    from explorer.views.trajectories import figure_html, records_csv, records_json
    from lsr1_core.viz.explore import default_specs, run_2d

    specs = default_specs("quadratic")
    result = run_2d("quadratic", {}, (-2.5, 1.5), [specs["Newton"], specs["Gradient descent"]], 12, 8)
    rows = json.loads(records_json(result))
    assert len(rows) == 2 * 13  # x_0..x_12 for each solver
    gd = [r for r in rows if r["solver"] == "Gradient descent"]
    f = result.traces["Gradient descent"].f[:, 0].numpy()
    np.testing.assert_allclose([r["f"] for r in gd], f)
    csv_lines = records_csv(result).strip().splitlines()
    assert csv_lines[0].startswith("solver,step") and len(csv_lines) == 1 + 26
    html = figure_html(result, "quadratic", {})
    assert "<html>" in html[:100] and "Gradient descent" in html


def test_trajectories_step_slider_reruns_only_the_linked_plots():
    at = _page("trajectories")
    at.multiselect(key="tr_solvers").set_value(["Gradient descent", "Newton"])
    at.slider(key="tr_steps").set_value(30)
    at.selectbox(key="tr_fn").set_value("quadratic").run()
    before = _charts(at)
    at.slider(key="main_step").set_value(10).run()
    assert not at.exception
    traj, obj = _charts(at)[:2]
    gd = next(t for t in traj["data"] if t.get("mode") == "lines+markers" and t["name"] == "Gradient descent")
    assert len(gd["x"]) == 11
    assert traj["layout"]["sliders"][0]["active"] == 10
    assert obj["layout"]["shapes"][0]["x0"] == 10
    # the animation frames (and so the whole path) are the same at every slider position
    assert len(traj["frames"]) == len(before[0]["frames"]) == 31
