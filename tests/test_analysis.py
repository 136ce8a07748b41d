import math

import numpy as np
import pytest
import torch

from lsr1_core.analysis import (cosine_to_newton, eigen_comparison, performance_measure, performance_profile,
                                profile_auc, secant_residual, trace_newton_cosines, trace_secant_residuals)
from lsr1_core.errors import UnknownNameError
from lsr1_core.objectives import quadratic_split
from lsr1_core.operators import Dense, LowRank
from lsr1_core.solvers import make_solver, run


def test_newton_solves_a_quadratic_in_one_step_and_has_cosine_one():
    q, x0 = quadratic_split("test")
    t = run(make_solver("newton"), q, x0, 1)
    assert torch.allclose(t.x[1], q.minimizer(), atol=1e-8)
    cos = trace_newton_cosines(t, q)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-10)


def test_gradient_descent_cosine_is_below_one_on_ill_conditioned_problems():
    q, x0 = quadratic_split("test")
    t = run(make_solver("gd", lr=1.0), q, x0, 3)
    cos = trace_newton_cosines(t, q)
    assert (cos < 0.999).all() and (cos > -1).all()
    assert torch.allclose(cosine_to_newton(-t.d[0], q.newton_direction(t.x[0])), -cos[0])


def test_secant_residual_matches_dense_and_is_zero_for_the_true_inverse():
    q, x0 = quadratic_split("test")
    p = torch.randn_like(x0)
    qq = q.hvp(x0, p)
    Hinv = torch.linalg.inv(q.H)
    assert secant_residual(Hinv, p, qq).max() < 1e-8
    W = torch.randn(32, 3, 10, dtype=torch.float64)
    op = LowRank(W)
    dense = op.dense()
    r_op = secant_residual(op, p, qq)
    r_dense = (p - torch.einsum("bij,bj->bi", dense, qq)).norm(dim=-1) / p.norm(dim=-1)
    assert torch.allclose(r_op, r_dense)


def test_trace_secant_residuals_are_zero_for_newton_on_a_quadratic():
    q, x0 = quadratic_split("test")
    t = run(make_solver("newton"), q, x0, 1)
    assert trace_secant_residuals(t).max() < 1e-6


def test_eigen_comparison_of_the_exact_inverse():
    q, x0 = quadratic_split("test")
    ev = eigen_comparison(Dense(torch.linalg.inv(q.H)), q, x0)
    assert torch.allclose(ev["approx"], ev["true_inverse"], rtol=1e-6)


def test_performance_measure_and_profile():
    xs = np.zeros(3)
    m = performance_measure({"a": np.array([1.0, 0, 0]), "b": np.array([2.0, 0, 0]), "c": None}, xs)
    assert m == {"a": 0.5, "b": 1.0, "c": math.inf}
    table = {"p1": {"a": 0.5, "b": 1.0}, "p2": {"a": 1.0, "b": 0.25}, "p3": {"a": 0.1, "b": math.inf}}
    taus, prof = performance_profile(table, taus=np.array([1.0, 2.0, 4.0, 100.0]))
    # a: ratios 1, 4, 1 ; b: ratios 2, 1, inf
    assert np.allclose(prof["a"], [2 / 3, 2 / 3, 1.0, 1.0])
    assert np.allclose(prof["b"], [1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert profile_auc(taus, prof["a"]) > profile_auc(taus, prof["b"])


def test_profile_counts_solves_to_rounding_as_ties():
    # b lands on x* bit for bit, a 1e-154 away: the same answer in double precision
    table = {"p1": {"a": 1e-154, "b": 0.0, "c": 1.0}, "p2": {"a": 0.5, "b": 1.0, "c": 1.0}}
    taus = np.array([1.0, 2.0, 1e20])
    _, prof = performance_profile(table, taus=taus)
    assert np.allclose(prof["a"], [1.0, 1.0, 1.0]) and np.allclose(prof["b"], [0.5, 1.0, 1.0])
    # a measure above the floor is not rounded away: 1e-10 vs 0 is a factor 1e-10 / eps ≈ 4.5e5
    _, prof = performance_profile({"p": {"a": 1e-10, "b": 0.0}}, taus=np.array([1.0, 1e5, 1e6]))
    assert np.allclose(prof["a"], [0.0, 0.0, 1.0])
    # floor=0 keeps the degenerate rule: exact zero beats everything else infinitely
    _, prof = performance_profile(table, taus=taus, floor=0.0)
    assert np.allclose(prof["a"], [0.5, 0.5, 0.5])


def test_unknown_solver_name():
    with pytest.raises(UnknownNameError, match="unknown solver 'bogus'"):
        make_solver("bogus")
