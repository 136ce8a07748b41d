"""The generality benchmark's objectives (experiments/extra_functions.py) and a small run of the benchmark."""
import json
import math

import pytest
import torch

from lsr1_core.errors import ShapeError, UnknownNameError
from experiments import generality
from experiments.extra_functions import (EXTRA_FUNCTIONS, ROTATABLE, STYBLINSKI_F, STYBLINSKI_X, ShiftRotated,
                                        defined_dim, extra_function)

torch.set_num_threads(1)

DIMS = (2, 10)


def closed_form_fstar(name, n):
    """f* from the literature (None: computed numerically by the objective)."""
    return {"powell": 0.0, "wood": 0.0, "trid": -n * (n + 4) * (n - 1) / 6, "dixon_price": 0.0, "zakharov": 0.0,
            "styblinski_tang": -39.16616570377142 * n, "ackley": 0.0, "levy": 0.0, "griewank": 0.0,
            "sum_powers": 0.0, "broken_scale": 0.0}.get(name)


@pytest.mark.parametrize("name", sorted(EXTRA_FUNCTIONS))
@pytest.mark.parametrize("d", DIMS)
def test_value_at_minimizer_is_fstar_and_gradient_vanishes(name, d):
    n = defined_dim(name, d)
    obj = extra_function(name, n)
    xs = obj.minimizer()
    assert xs.shape == (1, n) and xs.dtype == torch.float64
    f, g = obj.value_and_grad(xs)
    fstar = float(obj.min_value().flatten()[0])
    assert float(f[0]) == pytest.approx(fstar, abs=1e-10 * max(1.0, abs(fstar)))
    known = closed_form_fstar(name, n)
    if known is not None:
        assert float(f[0]) == pytest.approx(known, abs=1e-10 * max(1.0, abs(known)))
    # x* is stationary (Ackley: a kink, where autograd returns the subgradient 0)
    assert float(g.norm()) < 1e-8 * max(1.0, abs(fstar)), (name, n, float(g.norm()))
    # and it is a minimum: random nearby points are not lower
    gen = torch.Generator().manual_seed(0)
    near = xs + 1e-3 * torch.randn(16, n, generator=gen, dtype=torch.float64)
    assert bool((obj.value(near) >= f[0] - 1e-12 * max(1.0, abs(fstar))).all())
    # the starts are finite, distinct, and above f*
    x0 = obj.starts(2, seed=1)
    f0 = obj.value(x0)
    assert x0.shape == (2, n) and bool(torch.isfinite(f0).all()) and bool((f0 > fstar).all())


def test_values_at_classical_points():
    # Moré–Garbow–Hillstrom: Powell f(3, −1, 0, 1) = 215, Wood f(−3, −1, −3, −1) = 19192
    p = extra_function("powell", 4)
    assert float(p.value(p.standard_start())) == pytest.approx(215.0, abs=1e-12)
    w = extra_function("wood", 8)
    assert float(w.value(w.standard_start())) == pytest.approx(2 * 19192.0, abs=1e-9)
    t = extra_function("trid", 2)  # f(0) = Σ 1 = 2; f(x*) = f(2, 2) = 1 + 1 − 4 = −2
    assert float(t.value(torch.zeros(1, 2, dtype=torch.float64))) == 2.0
    assert float(t.min_value()) == -2.0
    assert STYBLINSKI_X == pytest.approx(-2.903534, abs=1e-6)
    assert STYBLINSKI_F == pytest.approx(-39.16616570377142, abs=1e-12)
    z = extra_function("zakharov", 2)  # x = (1, 1): 2 + 1.5² + 1.5⁴
    assert float(z.value(torch.ones(1, 2, dtype=torch.float64))) == pytest.approx(2 + 2.25 + 5.0625, abs=1e-12)
    s = extra_function("sum_powers", 3)  # |x₁|² + |x₂|³ + |x₃|⁴ at (−1, 2, 0.5)
    assert float(s.value(torch.tensor([[-1.0, 2.0, 0.5]], dtype=torch.float64))) == pytest.approx(1 + 8 + 0.0625)
    a = extra_function("ackley", 3)  # far away the exponentials vanish: f → 20 + e − e^{mean cos}
    assert float(a.value(torch.full((1, 3), 1e6, dtype=torch.float64))) == pytest.approx(20 + math.e - math.e, abs=1e-6)
    # batched: each row independent
    for name in EXTRA_FUNCTIONS:
        obj = extra_function(name, defined_dim(name, 10))
        xx = torch.randn(5, obj.dim, dtype=torch.float64)
        batch = obj.value(xx)
        single = torch.cat([obj.value(xx[i:i + 1]) for i in range(5)])
        assert batch.shape == (5,) and torch.allclose(batch, single, rtol=1e-12, atol=1e-12), name


@pytest.mark.parametrize("name", ROTATABLE)
def test_shift_rotated_keeps_fstar_and_maps_starts(name):
    n = defined_dim(name, 10)
    base = extra_function(name, n)
    rot = ShiftRotated(base, seed=3, shift=2.0)
    R = rot.R
    assert torch.allclose(R @ R.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    xs = rot.minimizer()
    fstar = float(base.min_value().flatten()[0])
    f, g = rot.value_and_grad(xs)
    assert float(f[0]) == pytest.approx(fstar, abs=1e-10 * max(1.0, abs(fstar)))
    assert float(g.norm()) < 1e-8 * max(1.0, abs(fstar))
    x0 = base.starts(2, seed=0)
    assert torch.allclose(rot.value(rot.map_start(x0)), base.value(x0), rtol=1e-10, atol=1e-9)


def test_bad_input_raises_clear_errors():
    obj = extra_function("wood", 4)
    with pytest.raises(ShapeError, match="4-dimensional"):
        obj.value(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"shape \(B, N\)"):
        obj.value(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ShapeError, match="floating-point"):
        obj.value(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ShapeError, match="multiple of 4"):
        extra_function("powell", 6)
    with pytest.raises(ShapeError):
        extra_function("trid", 0)
    with pytest.raises(UnknownNameError, match="unknown function"):
        extra_function("rosenbrock", 2)
    with pytest.raises(ShapeError, match="3-dimensional"):
        ShiftRotated(extra_function("levy", 3)).value(torch.zeros(1, 2, dtype=torch.float64))
    assert defined_dim("powell", 2) == 4 and defined_dim("wood", 10) == 12 and defined_dim("trid", 10) == 10


def test_small_benchmark_run(tmp_path):
    res = generality.run_benchmark(dims=[2], steps=20, functions=["powell", "trid"], solvers=["qn", "lbfgs"])
    assert set(res) >= {"config", "records", "summary", "per_function", "scale_spread", "qn_failures", "wall_s"}
    # powell at N = 4 and trid at N = 2, each base (3 scales) + rotated (c = 1): 8 cells × 2 starts × 2 solvers
    assert len(res["records"]) == 8 * 2 * 2
    assert set(res["per_function"]) == {"powell|4", "trid|2"}
    for key in ("runs", "exceptions", "diverged", "f_rose", "reached", "reached_share", "median_log10_rel_gap",
                "median_evals", "worse_than_lbfgs_10x", "better_than_lbfgs_10x"):
        assert key in res["summary"]["qn"], key
    qn = res["summary"]["qn"]
    assert qn["runs"] == 16 and qn["exceptions"] == 0 and qn["diverged"] == 0 and qn["f_rose"] == 0
    assert res["summary"]["lbfgs"]["worse_than_lbfgs_10x"] is None
    recs = [r for r in res["records"] if r["solver"] == "qn"]
    assert all(r["exception"] is None for r in recs)
    # trid N = 2 is a 2-D convex quadratic: a quasi-Newton method solves it in a few steps in every unit
    trid = [r for r in recs if r["function"] == "trid"]
    assert all(r["steps_to_tol"] is not None and r["steps_to_tol"] <= 10 for r in trid)
    assert all(r["rel_gap"] < 1e-10 for r in trid)
    # the scale-free form's run does not depend on c
    assert res["scale_spread"]["qn"]["max"] < 0.5
    md = generality.markdown(res, "test")
    assert "## Per solver" in md and "## Per function and N" in md and "| trid | 2 |" in md
    json.dumps(generality.clean(res), allow_nan=False)


def test_exceptions_are_recorded_not_raised(monkeypatch):
    def boom():
        raise RuntimeError("synthetic failure")
    monkeypatch.setitem(generality.SOLVERS, "qn", ("boom", boom))
    recs = generality.run_cell("trid", 2, "base", 1.0, "qn", 5)
    assert len(recs) == 2 and all(r["exception"] == "RuntimeError: synthetic failure" for r in recs)
    assert recs[0]["traceback"]


def test_reproduce_returns_trace():
    tr = generality.reproduce("levy", 2, c=1e3, start=1, steps=5)
    assert tr.f.shape == (6, 1) and not bool(tr.diverged.any())


def test_stall_detector_on_a_synthetic_trace():
    from types import SimpleNamespace
    T = 30
    f = torch.linspace(10.0, 5.0, T + 1, dtype=torch.float64).unsqueeze(1)
    f[12:] = f[11]  # frozen from step 11 on, far from f* = 0
    g = torch.ones(T + 1, 1, 2, dtype=torch.float64)
    tr = SimpleNamespace(f=f, g=g, evals=torch.full((T,), 32), diverged=torch.tensor([False]), reason=[None])
    st = generality._row_stats(tr, 0, 0.0)
    assert st["flat_tail"] == T - 11 and st["stalled"] and st["steps_to_tol"] is None
    assert st["rel_gap"] == pytest.approx(float(f[11, 0]) / 10.0)
    # a converged row (gradient vanished) that stops moving is not a stall
    g2 = g.clone()
    g2[-1] = 0.0
    tr2 = SimpleNamespace(f=f, g=g2, evals=tr.evals, diverged=tr.diverged, reason=[None])
    assert not generality._row_stats(tr2, 0, 0.0)["stalled"]


def test_qn_keeps_moving_on_logsumexp_n100():
    """Found by this benchmark (a pair with pᵀq ~ 5e-14 made H ~ 1e11 along it and 30 halvings could not shorten
    the step enough; the run froze for good); fixed by the qn form's recovery rule (tests/test_qn_recovery.py)."""
    tr = generality.reproduce("logsumexp", 100, c=1.0, start=1, steps=20)
    f = tr.f[:, 0]
    assert float(f[-1]) < float(f[6])


def test_cli_refuses_bad_arguments(capsys):
    for argv in (["--steps", "0"], ["--dims", "0"], ["--scales", "-1"], ["--rot-scales", "nan"]):
        with pytest.raises(SystemExit) as e:
            generality.main(argv + ["--out", "/nonexistent-dir"])
        assert e.value.code == 2
    assert "must" in capsys.readouterr().err


def test_rebuild_of_a_missing_or_hostile_file_is_refused_and_changes_nothing(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    with pytest.raises(SystemExit) as e:
        generality.main(["--rebuild", "--out", str(tmp_path)])
    assert e.value.code == 2
    res_dir = tmp_path / "results"
    res_dir.mkdir()
    leaf = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=5)
    value = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                         max_leaves=12)
    record = st.fixed_dictionaries({}, optional={k: value for k in ("solver", "function", "N", "variant", "c", "start",
                                                                     "exception", "flat_tail", "steps_to_tol", "g_rel",
                                                                     "diverged", "f_final", "rel_gap", "evals")})
    doc = st.fixed_dictionaries({"records": st.lists(record, max_size=4) | value,
                                 "config": st.fixed_dictionaries({"solvers": st.lists(st.sampled_from(
                                     list(generality.SOLVERS)), max_size=3)}) | value}) | value

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(doc)
    def check(d):
        text = json.dumps(d, allow_nan=True)
        (res_dir / "generality.json").write_text(text)
        (tmp_path / "results_generality.md").write_text("old")
        try:
            generality.main(["--rebuild", "--out", str(tmp_path)])
        except SystemExit as e:
            assert e.code == 2
            assert (res_dir / "generality.json").read_text() == text  # nothing rewritten
            assert (tmp_path / "results_generality.md").read_text() == "old"

    check()
