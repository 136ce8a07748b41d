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


def _player(at, i=0):
    """The trajectory player's argument (its figures decoded) for the i-th setting on the page."""
    comps = [c for c in at.get("component_instance") if c.proto.component_name.endswith("trajectory_player")]
    spec = json.loads(comps[i].proto.json_args)["spec"]
    return {**spec, "traj": _decode(spec["traj"]), "obj": _decode(spec["obj"])}


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
    spec = _player(at)
    traj, obj = spec["traj"], spec["obj"]
    paths = [t for t in traj["data"] if t.get("mode") == "lines+markers"]
    assert len(paths) == 3
    newton = next(t for t in paths if t["name"].startswith("Newton"))
    # Newton solves the quadratic in one step: its path ends at the minimiser (0, 0)
    assert abs(newton["x"][-1]) < 1e-9 and abs(newton["y"][-1]) < 1e-9
    # the player holds every step 0..20 of every solver and starts at the last one
    assert spec["T"] == 20
    assert all(len(s["x"]) == len(s["y"]) == len(s["f"]) == 21 for s in spec["solvers"])
    nt = next(s for s in spec["solvers"] if s["label"] == "Newton")
    assert abs(nt["x"][1]) < 1e-9 and abs(nt["y"][1]) < 1e-9
    assert obj["layout"]["yaxis"]["type"] == "log"
    gd = next(t for t in obj["data"] if t["name"] == "Gradient descent")
    assert len(gd["y"]) == 21 and gd["y"][-1] < gd["y"][0]
    assert obj["data"][spec["vline"]]["x"] == [20, 20]


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
    spec = _player(at)
    gd = next(t for t in spec["traj"]["data"] if t.get("mode") == "lines+markers")
    assert "diverged at step" in gd["name"]
    # the player stops the diverged path at its last finite point and knows where it diverged
    div = spec["solvers"][0]["div"]
    assert div > 0 and len(spec["solvers"][0]["x"]) == div and np.isfinite(spec["solvers"][0]["f"]).all()


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
    at.session_state["cv_tab"] = "Why PSD matters"
    at.run()
    assert any("goes uphill" in l.value for l in at.latex)


def test_benchmarks_page_shows_precomputed_results():
    at = _page("benchmarks")
    charts = _charts(at)
    at.session_state["bm_tab"] = "Quadratics (Fig. 3a)"
    at.run()
    charts += _charts(at)
    assert len(charts) >= 2
    prof = charts[0]
    assert any("L-BFGS" in t["name"] for t in prof["data"])
    assert all(0 <= v <= 1 for t in prof["data"] for v in t["y"])


def test_trajectories_exports_hold_every_step_of_every_solver():
    from explorer.views.trajectories import figure_html, records_csv, records_json
    from explorer.catalog import default_specs
    from lsr1_core.viz.explore import run_2d

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


def test_trajectories_click_on_the_contour_sets_the_start():
    at = _page("trajectories")
    at.multiselect(key="tr_solvers").set_value(["Gradient descent", "Newton"])
    at.slider(key="tr_steps").set_value(30)
    at.selectbox(key="tr_fn").set_value("quadratic").run()
    assert not at.exception
    # what the player sends back when the contour is clicked (the browser test clicks it for real)
    at.session_state["main_player"] = {"x": 0.51234, "y": -0.75, "n": 1.5}
    at.run()
    assert not at.exception
    assert at.number_input(key="tr_sx").value == pytest.approx(0.512)
    assert at.number_input(key="tr_sy").value == pytest.approx(-0.75)
    spec = _player(at)
    assert all(s["x"][0] == pytest.approx(0.512) and s["y"][0] == pytest.approx(-0.75) for s in spec["solvers"])
    # the same click is not applied twice: a start typed afterwards stays
    at.number_input(key="tr_sx").set_value(1.0).run()
    assert at.number_input(key="tr_sx").value == 1.0
    # a click outside the plotted range is clamped to it
    (x0, x1), _ = __import__("lsr1_core.objectives", fromlist=["x"]).teaching_function("quadratic").bounds
    at.session_state["main_player"] = {"x": x1 + 10, "y": 0.0, "n": 2.5}
    at.run()
    assert at.number_input(key="tr_sx").value == pytest.approx(round(x1, 3)) and not at.error

# --- issue 16: defects a new user trips on ----------------------------------------------------------------------
def test_switching_the_function_applies_its_own_default_start():
    from lsr1_core.objectives import teaching_function
    at = _page("trajectories")
    at.multiselect(key="tr_solvers").set_value(["Gradient descent"])
    at.selectbox(key="tr_fn").set_value("quadratic").run()
    at.number_input(key="tr_sx").set_value(2.9).run()
    for fn in ("rosenbrock", "six_hump_camel", "himmelblau"):
        at.selectbox(key="tr_fn").set_value(fn).run()
        sx, sy = teaching_function(fn).default_start
        assert at.number_input(key="tr_sx").value == pytest.approx(sx), fn
        assert at.number_input(key="tr_sy").value == pytest.approx(sy), fn
        assert not at.error and not at.exception
    # Curvature & secant: Rosenbrock and the camel draw their plots, no "outside the range" error
    at = _page("curvature")
    for fn in ("rosenbrock", "six_hump_camel"):
        at.selectbox(key="cv_fn").set_value(fn).run()
        assert not at.exception
        assert not any("outside" in e.value for e in at.error), fn
        assert len(_charts(at)) >= 2, fn


def test_curvature_on_rosenbrock_shows_no_exploded_numbers():
    import re
    at = _page("curvature")
    at.selectbox(key="cv_fn").set_value("rosenbrock").run()
    assert not at.exception
    latex = " ".join(l.value for l in at.latex)
    assert not re.search(r"\de\s*[-+−]", latex), latex  # 4.608e-05 is written 4.608 × 10^{-5}
    big = [float(m) for m in re.findall(r"10\^\{(\d+)\}", latex)]
    assert all(e < 10 for e in big), latex
    assert not any("[0.0, 0.0]" in c.value for c in at.caption)
    # a model that blows up on this function says so instead of printing 1e26
    models = [o for o in at.selectbox(key="cv_who").options if o.startswith("L-SR1")]
    if models:
        at.selectbox(key="cv_who").set_value(models[0])
        at.slider(key="cv_step").set_value(4).run()
        latex = " ".join(l.value for l in at.latex)
        assert not re.search(r"10\^\{(\d\d+)\}", latex), latex
        if not any("Secant equation" in m.value for m in at.markdown):
            assert any("blew up" in w.value for w in at.warning)


def test_tex_numbers_are_latex_powers_of_ten():
    from lsr1_core.viz.teaching import fmt_list, tex_num
    assert tex_num(-4.608e-05) == r"-4.608 \times 10^{-5}"
    assert tex_num(0.0123) == "0.0123" and tex_num(0) == "0" and tex_num(1.6e26) == r"1.6 \times 10^{26}"
    assert fmt_list([1.18e-07, 0.015]) == "[1.18e-07, 0.015]"


def test_curvature_secant_residual_is_the_textbook_one_by_default():
    at = _page("curvature")
    at.multiselect(key="cv_solvers").set_value(["L-BFGS", "SR1 (classical)", "Gradient descent"])
    at.slider(key="cv_steps").set_value(8).run()
    assert not at.exception
    sec = _charts(at)[1]
    assert "Bₖ₊₁qₖ" in sec["layout"]["yaxis"]["title"]["text"]
    lb = next(t for t in sec["data"] if t["name"] == "L-BFGS")
    vals = [v for v in lb["y"][:6] if v is not None]
    assert vals and max(vals) < 1e-8  # L-BFGS's B_{k+1} satisfies B_{k+1} q_k = p_k
    gd = next(t for t in sec["data"] if t["name"] == "Gradient descent")
    assert min(v for v in gd["y"] if v is not None) > 0.1  # gradient descent's lr·I does not
    assert any("textbook" in m.value for m in at.markdown)
    # the other form is stated and available
    at.radio(key="cv_form").set_value([o for o in at.radio(key="cv_form").options if "Eq. 8" in o][0]).run()
    sec = _charts(at)[1]
    assert "Bₖqₖ" in sec["layout"]["yaxis"]["title"]["text"]


def test_html_export_works_offline():
    from explorer.views.trajectories import figure_html
    from explorer.catalog import default_specs
    from lsr1_core.viz.explore import run_2d
    specs = default_specs("quadratic")
    html = figure_html(run_2d("quadratic", {}, (-2.5, 1.5), [specs["Newton"]], 5, 8), "quadratic", {})
    import re
    assert not re.search(r"<script[^>]*\ssrc=", html)  # nothing loaded from the network (was plotly's CDN)
    assert "Plotly" in html and len(html) > 1_000_000  # plotly.js itself is in the file


def test_a_model_has_one_colour_on_every_page_and_panel():
    from lsr1_core.viz.palette import color_for
    at = _page("curvature")
    chosen = ["L-BFGS", "SR1 (classical)"] + [o for o in at.multiselect(key="cv_solvers").options
                                              if o.startswith("L-SR1")][:1]
    at.multiselect(key="cv_solvers").set_value(chosen).run()
    colours = {}
    for chart in _charts(at):
        for t in chart["data"]:
            if t.get("name") in chosen:
                colours.setdefault(t["name"], set()).add((t.get("line") or {}).get("color"))
    assert colours, "no solver series found"
    for name, cols in colours.items():
        assert cols == {color_for(name)}, (name, cols)
    assert color_for("L-BFGS") != color_for("SR1 (classical)")


def test_qn_variants_put_the_ablations_beside_the_shipped_model():
    """Sidebar 'qn form: variants': the shipped qn model and its run without the BFGS fallback side by side on
    Rosenbrock; the fallback reaches f < 1e-6 within 50 steps, the ablation does not (35 vs 74 steps,
    docs/results_qn.md section D)."""
    at = _page("trajectories")
    at.multiselect(key="qn_variants").set_value(["as shipped", "no BFGS fallback"]).run()
    assert not at.exception
    names = at.multiselect(key="tr_solvers").value
    shipped = [n for n in names if n.startswith("L-SR1 qn_") and "(" not in n]
    ablated = [n for n in names if n.startswith("L-SR1 qn_") and n.endswith("(no BFGS fallback)")]
    assert len(shipped) == 1 and ablated == [shipped[0] + " (no BFGS fallback)"]
    at.multiselect(key="tr_solvers").set_value(shipped + ablated)
    at.selectbox(key="tr_fn").set_value("rosenbrock")
    at.slider(key="tr_steps").set_value(50).run()
    assert not at.exception
    f = {s["label"]: s["f"] for s in _player(at)["solvers"]}
    assert f[shipped[0]][-1] < 1e-6 < f[ablated[0]][-1]


def test_variants_apply_to_the_qn_form_only():
    from explorer.catalog import lsr1_spec_variants

    qn = lsr1_spec_variants("L-SR1 m", "pretrained/qn_quadratic", "qn", ["as shipped", "H₀ = γI, no BFGS fallback"])
    assert list(qn) == ["L-SR1 m", "L-SR1 m (H₀ = γI, no BFGS fallback)"]
    solver = qn["L-SR1 m (H₀ = γI, no BFGS fallback)"].build(memory=8)
    assert solver.net.config.fallback == "skip" and solver.net.config.h0 == "envelope"
    assert qn["L-SR1 m"].build().net.config.fallback == "bfgs"
    paper = lsr1_spec_variants("L-SR1 p", "pretrained/quadratic", "paper", ["no BFGS fallback"])
    assert list(paper) == ["L-SR1 p"] and paper["L-SR1 p"].qn_rules == ()


def test_qn_bfgs_variant_runs_beside_the_shipped_model():
    """The 'qn_bfgs rules' variant builds LSR1Config.qn_bfgs()'s rules on the shipped card and, on Rosenbrock from
    the page's default start, reaches f < 1e-8 within 50 steps without any rise of f."""
    from explorer.catalog import lsr1_spec_variants
    from lsr1_core.learned import LSR1Config

    v = "qn_bfgs rules (BFGS update, strong Wolfe)"
    spec = lsr1_spec_variants("L-SR1 m", "pretrained/qn_quadratic", "qn", [v])[f"L-SR1 m ({v})"]
    cfg, ref = spec.build(memory=8).net.config, LSR1Config.qn_bfgs()
    assert all(getattr(cfg, k) == getattr(ref, k)
               for k in ("update", "h0", "gamma_factor", "backtrack", "extrapolate", "probe_pair"))
    at = _page("trajectories")
    at.multiselect(key="qn_variants").set_value(["as shipped", v]).run()
    assert not at.exception
    names = at.multiselect(key="tr_solvers").value
    ours = [n for n in names if n.endswith(f"({v})")]
    assert len(ours) == 1
    at.multiselect(key="tr_solvers").set_value(ours)
    at.selectbox(key="tr_fn").set_value("rosenbrock")
    at.slider(key="tr_steps").set_value(50).run()
    assert not at.exception
    f = {s["label"]: s["f"] for s in _player(at)["solvers"]}[ours[0]]
    assert f[-1] < 1e-8 and all(b <= a + 1e-12 for a, b in zip(f, f[1:]))


def test_qn_variants_reach_the_n_dimensional_section():
    at = _page("curvature")
    at.session_state["cv_tab"] = "N-dimensional quadratic"
    at.multiselect(key="qn_variants").set_value(["as shipped", "H₀ = γI, no BFGS fallback"]).run()
    assert not at.exception
    who = at.selectbox(key="nd_who").options
    shipped = [w for w in who if w.startswith("L-SR1 qn_") and "(" not in w]
    assert shipped and shipped[0] + " (H₀ = γI, no BFGS fallback)" in who
