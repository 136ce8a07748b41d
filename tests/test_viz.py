"""The pure figure builders and page computations of lsr1_core.viz, checked through fig.to_dict()."""
import math

import numpy as np
import pytest
import torch

from lsr1_core.objectives import teaching_function
from lsr1_core.trace import Trace
from explorer.catalog import default_specs
from lsr1_core.viz.explore import newton_cosines, run_2d, single_thread
from lsr1_core.viz.plots import (frame_steps, objective_figure, profile_figure, series_figure, spectra_figure,
                                 trajectory_figure)


@pytest.fixture(scope="module")
def quad_run():
    specs = default_specs("quadratic")
    return run_2d("quadratic", {"cond": 10.0, "angle": 30.0}, (-2.5, 1.5),
                  [specs["Newton"], specs["Gradient descent"], specs["L-BFGS"]], 30, 8)


def _arr(v):
    """A numeric array from fig.to_dict() (plain list, numpy array or plotly's base64 dict)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v, dtype=float)


def test_frame_steps_keeps_every_step_for_short_runs_and_strides_long_ones():
    assert frame_steps(20, 7) == list(range(21))
    s = frame_steps(200, 77, max_frames=61)
    assert s[0] == 0 and s[-1] == 200 and 77 in s
    assert len(s) <= 63 and s == sorted(set(s))


def test_trajectory_figure_one_path_per_solver_and_frames(quad_run):
    obj = teaching_function("quadratic", cond=10.0, angle=30.0)
    fig = trajectory_figure(obj, quad_run.traces, obj.bounds, step=5).to_dict()
    paths = [t for t in fig["data"] if t.get("mode") == "lines+markers"]
    assert [t["name"] for t in paths] == ["Newton", "Gradient descent", "L-BFGS"]
    # The path shown is x_0..x_5 of each solver, ending at the highlighted current point.
    lbfgs = paths[2]
    x = quad_run.traces["L-BFGS"].x[:, 0].numpy()
    np.testing.assert_allclose(_arr(lbfgs["x"]), x[:6, 0])
    np.testing.assert_allclose(_arr(lbfgs["y"]), x[:6, 1])
    markers = [t for t in fig["data"] if t.get("name", "").endswith("@ step 5")]
    assert len(markers) == 3
    assert len(fig["frames"]) == 31 and fig["frames"][30]["name"] == "30"
    # Frame 30 of Newton: the whole path, which ends at the minimiser (0, 0) after one step.
    newton_frame = fig["frames"][30]["data"][0]
    assert abs(_arr(newton_frame["x"])[-1]) < 1e-6 and abs(_arr(newton_frame["y"])[-1]) < 1e-6
    assert fig["layout"]["sliders"][0]["active"] == 5
    assert [b["label"] for b in fig["layout"]["updatemenus"][0]["buttons"]][0].endswith("play")


def test_long_runs_animate_with_at_most_61_frames(quad_run):
    specs = default_specs("quadratic")
    r = run_2d("quadratic", {}, (-2.5, 1.5), [specs["Gradient descent"]], 200, 8)
    obj = teaching_function("quadratic")
    fig = trajectory_figure(obj, r.traces, obj.bounds, step=123).to_dict()
    names = [f["name"] for f in fig["frames"]]
    assert len(names) <= 63 and "123" in names and names[-1] == "200"
    assert fig["layout"]["sliders"][0]["steps"][fig["layout"]["sliders"][0]["active"]]["label"] == "123"


def _diverging_trace(T=10, div=4, N=2):
    x = torch.zeros(T + 1, 1, N, dtype=torch.float64)
    x[:, 0, 0] = torch.arange(T + 1, dtype=torch.float64)
    f = torch.full((T + 1, 1), 1.0, dtype=torch.float64)
    f[1:div, 0] = torch.tensor([1e3, 1e50, 1e120], dtype=torch.float64)[: div - 1]
    f[div:] = float("inf")
    return Trace(solver="bad", objective="q", x=x, f=f, g=torch.ones_like(x), d=torch.ones(T, 1, N),
                 alpha=torch.ones(T, 1, N), evals=torch.ones(T + 1, dtype=torch.long), operators=[None] * T,
                 extras={}, diverged_at=torch.tensor([div]), reason=["objective value became non-finite"])


def test_diverged_solver_is_marked_and_does_not_squash_the_objective_axis(quad_run):
    traces = dict(quad_run.traces)
    try:
        traces["bad"] = _diverging_trace()
    except TypeError:
        pytest.skip("Trace signature changed; the diverged case is covered by the app tests")
    obj = teaching_function("quadratic", cond=10.0, angle=30.0)
    fig = trajectory_figure(obj, traces, obj.bounds, step=8).to_dict()
    bad = next(t for t in fig["data"] if t.get("name", "").startswith("bad"))
    assert "diverged at step 4" in bad["name"]
    assert len(_arr(bad["x"])) == 4  # x_0..x_3: the finite part only
    marker = next(t for t in fig["data"] if t.get("name") == "bad @ step 3")
    assert marker["marker"]["symbol"] == "x"
    of = objective_figure(traces, quad_run.f_star, step=8).to_dict()
    start_gap = float(quad_run.traces["Newton"].f[0, 0]) - quad_run.f_star
    lo, hi = of["layout"]["yaxis"]["range"]
    assert hi == pytest.approx(math.log10(start_gap * 1e4))
    assert any("diverged at step 4" in t["name"] for t in of["data"])


def test_objective_figure_plots_the_gap_on_a_log_axis(quad_run):
    fig = objective_figure(quad_run.traces, quad_run.f_star, step=3).to_dict()
    assert fig["layout"]["yaxis"]["type"] == "log"
    gd = next(t for t in fig["data"] if t["name"] == "Gradient descent")
    f = quad_run.traces["Gradient descent"].f[:, 0].numpy()
    np.testing.assert_allclose(_arr(gd["y"]), np.maximum(f - quad_run.f_star, 1e-16))
    assert fig["layout"]["shapes"][0]["x0"] == 3  # the dashed current-step line


def test_newton_cosines_are_one_for_newton_and_undefined_at_the_minimiser(quad_run):
    cos = quad_run.cosines["Newton"]
    assert cos[0] == pytest.approx(1.0)
    assert np.isnan(cos[1:]).all()  # at the minimiser after one step: no direction to compare
    obj = teaching_function("quadratic", cond=10.0, angle=30.0)
    np.testing.assert_array_equal(np.isnan(newton_cosines(quad_run.traces["Newton"], obj)), np.isnan(cos))
    gd = quad_run.cosines["Gradient descent"]
    assert np.all((gd[np.isfinite(gd)] > 0) & (gd[np.isfinite(gd)] <= 1 + 1e-12))


def test_series_figure_skips_solvers_without_values_and_uses_power_ticks(quad_run):
    series = dict(quad_run.secant, Adam=np.full(30, np.nan))  # a solver without a curvature matrix
    fig = series_figure(series, 4, "‖p − Bq‖ / ‖p‖", log=True).to_dict()
    names = [t["name"] for t in fig["data"]]
    assert "L-BFGS" in names and "Adam" not in names
    assert fig["layout"]["yaxis"]["exponentformat"] == "power"
    lb = next(t for t in fig["data"] if t["name"] == "L-BFGS")
    np.testing.assert_allclose(_arr(lb["x"]), np.arange(1, 31))


def test_spectra_figure_pairs_each_step_with_true_eigenvalues():
    spec = {"steps": [1, 2], "approx": [np.array([1.0, 3.0]), np.array([1.0, 5.0])],
            "true": [np.array([1.0, 10.0]), np.array([1.0, 10.0])]}
    fig = spectra_figure(spec, "L-SR1", step=2).to_dict()
    approx, true = fig["data"]
    np.testing.assert_allclose(_arr(approx["x"]), [1, 1, 2, 2])
    np.testing.assert_allclose(_arr(approx["y"]), [1, 3, 1, 5])
    np.testing.assert_allclose(_arr(true["y"]), [1, 10, 1, 10])
    assert fig["layout"]["yaxis"]["type"] == "log"


def test_profile_figure_orders_by_area_and_cuts_astronomic_tau():
    taus = [1.0, 2.0, 10.0, 1e6, 1e120]
    fig = profile_figure(taus, {"gd": [0.2, 0.5, 1, 1, 1], "lsr1": [0, 0, 0, 0.1, 1]},
                         {"gd": 0.9, "lsr1": 0.05}).to_dict()
    assert [t["name"] for t in fig["data"]] == ["gd (area 0.90)", "lsr1 (area 0.05)"]
    assert fig["layout"]["xaxis"]["range"] == [0.0, 4.0]
    assert "cut" in fig["layout"]["annotations"][0]["text"]
    short = profile_figure([1.0, 10.0], {"gd": [0.5, 1]}).to_dict()
    assert "range" not in short["layout"]["xaxis"]


def test_single_thread_restores_the_thread_count():
    n = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n


def test_default_specs_list_only_importable_solvers(monkeypatch):
    import lsr1_core.solvers as solvers
    from explorer import catalog as explore

    assert "L-BFGS" in explore.default_specs("quadratic")
    monkeypatch.setitem(solvers.SOLVERS, "lbfgs", ("lsr1_core.solvers.not_written_yet", "LBFGS"))
    specs = explore.default_specs("quadratic")
    assert "L-BFGS" not in specs and "Newton" in specs


def test_player_figures_hold_every_step_and_match_the_traces(quad_run):
    from lsr1_core.viz.plots import player_figures
    obj = teaching_function("quadratic", cond=10.0, angle=30.0)
    traces = dict(quad_run.traces)
    try:
        traces["bad"] = _diverging_trace()
    except TypeError:
        pytest.skip("Trace signature changed")
    figs = player_figures(obj, traces, quad_run.f_star, obj.bounds)
    assert figs["T"] == 30 and not figs["traj"].frames  # no animation frames: the player slices the paths
    traj, objf = figs["traj"].to_dict(), figs["obj"].to_dict()
    for s in figs["solvers"]:
        tr = traces[s["label"]]
        div = int(tr.diverged_at[0])
        n = div if div >= 0 else tr.steps + 1
        assert len(s["x"]) == len(s["y"]) == len(s["f"]) == n and s["div"] == div
        np.testing.assert_allclose(s["x"], tr.x[:n, 0, 0].double().numpy())
        # the indices point at this solver's traces: its path, its current point, its objective marker
        assert traj["data"][s["line"]]["legendgroup"] == s["label"] == traj["data"][s["marker"]]["legendgroup"]
        assert traj["data"][s["line"]]["mode"] == "lines+markers" and traj["data"][s["marker"]]["mode"] == "markers"
        assert objf["data"][s["omarker"]]["legendgroup"] == s["label"]
        assert list(objf["data"][s["omarker"]]["x"]) == [n - 1]
        if div < 0:
            np.testing.assert_allclose(s["f"], np.maximum(tr.f[:, 0].double().numpy() - quad_run.f_star, 1e-16))
    bad = next(s for s in figs["solvers"] if s["label"] == "bad")
    assert bad["div"] == 4 and len(bad["x"]) == 4
    # the step line spans the fixed y range, at the last step
    vl = objf["data"][figs["vline"]]
    lo, hi = objf["layout"]["yaxis"]["range"]
    assert list(vl["x"]) == [30, 30] and list(_arr(vl["y"])) == pytest.approx([10 ** lo, 10 ** hi])


def test_training_curves_are_on_log_scales_with_a_running_median():
    from lsr1_core.viz.training import overlay_curves, training_curves
    rng = np.random.default_rng(0)
    metrics = [{"iteration": i, "meta_loss": float(10 * math.exp(-i / 50) * (1 + (50 if i % 37 == 0 else 0))),
                "secant_rel": 0.5, **({"val_loss": 5.0 / (i + 1)} if i % 10 == 0 else {})} for i in range(1, 201)]
    fig = training_curves(metrics).to_dict()
    assert fig["layout"]["yaxis"]["type"] == "log" and fig["layout"]["yaxis2"]["type"] == "log"
    med = next(t for t in fig["data"] if t["name"] == "training meta-loss (running median)")
    assert max(_arr(med["y"])) < 20  # the spikes (× 51) are gone from the trend line
    over = overlay_curves({"run a": metrics, "run b": metrics[:100]}, "val_loss").to_dict()
    assert over["layout"]["yaxis"]["type"] == "log"
    assert len({t["line"]["color"] for t in over["data"]}) == 2


def test_every_figure_gives_a_solver_the_palette_colour(quad_run):
    from lsr1_core.viz.palette import color_for
    obj = teaching_function("quadratic", cond=10.0, angle=30.0)
    for fig in (trajectory_figure(obj, quad_run.traces, obj.bounds, animate=False),
                objective_figure(quad_run.traces, 0.0), series_figure(quad_run.cosines, 3, "cos")):
        for t in fig.to_dict()["data"]:
            name = t.get("name") or ""
            for lab in quad_run.traces:
                if name == lab:
                    assert t["line"]["color"] == color_for(lab), (lab, t["line"]["color"])
