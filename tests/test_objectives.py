import math

import pytest
import torch

from lsr1_core.errors import ShapeError, UnknownNameError
from lsr1_core.objectives import (TEACHING_FUNCTIONS, Objective, Quadratic, Rastrigin, Rosenbrock, diagonal_quadratic,
                                  profile_suite, quadratic_split, random_quadratics, teaching_function)


def _autograd_grad(obj, x):
    return Objective.value_and_grad(obj, x)[1]


def test_quadratic_split_matches_c21():
    q, x0 = quadratic_split("test")
    assert q.dim == 10 and q.batch == 32 and x0.shape == (32, 10)
    ev = torch.linalg.eigvalsh(q.H)
    cond = ev[:, -1] / ev[:, 0]
    assert (cond <= 1000).all() and (ev[:, 0] > 0).all()
    assert torch.allclose(torch.linalg.matrix_norm(q.H), torch.ones(32, dtype=q.H.dtype))
    assert torch.allclose(q.b.norm(dim=1), torch.ones(32, dtype=q.b.dtype))
    # fixed seed: the same call gives the same problems
    q2, x02 = quadratic_split("test")
    assert torch.equal(q.H, q2.H) and torch.equal(x0, x02)
    qv, _ = quadratic_split("validation")
    assert qv.dim == 2 and qv.batch == 32


def test_quadratic_minimizer_and_newton_step():
    q, x0 = quadratic_split("test")
    xs = q.minimizer()
    assert q.grad(xs).abs().max() < 1e-8
    x1 = x0 - q.newton_direction(x0)
    assert torch.allclose(x1, xs, atol=1e-8)
    assert torch.allclose(q.hessian(x0), q.H)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rosenbrock_analytic_derivatives_match_autograd(dtype):
    r = Rosenbrock(7)
    x = torch.randn(4, 7, dtype=dtype)
    tol = 1e-3 if dtype == torch.float32 else 1e-10
    assert torch.allclose(r.grad(x), _autograd_grad(r, x), rtol=tol, atol=tol)
    H = r.hessian(x)
    Hauto = Objective.hessian(r, x.double()).to(dtype)
    assert torch.allclose(H, Hauto, rtol=tol, atol=tol * 100)
    assert r.value(torch.ones(1, 7, dtype=dtype)).item() == 0.0


def test_rastrigin_derivatives_and_minimum():
    f = Rastrigin(5)
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(f.grad(x), _autograd_grad(f, x))
    assert torch.allclose(f.hessian(x), Objective.hessian(f, x), atol=1e-8)
    assert f.value(torch.zeros(1, 5, dtype=torch.float64)).item() == 0.0


def test_diagonal_quadratics_condition_numbers():
    for cond in (1, 100, 1000, 10000):
        q = diagonal_quadratic(50, cond)
        assert math.isclose(float(q.h.max() / q.h.min()), cond, rel_tol=1e-9)
        assert q.minimizer().abs().max() == 0


def test_profile_suite_has_30_fixed_problems():
    a = profile_suite()
    b = profile_suite()
    assert len(a) == 30
    assert len({p.name for p in a}) == 30
    assert {p.dim for p in a} == {50, 100, 250, 500, 1000}
    assert all(torch.equal(pa.x0, pb.x0) for pa, pb in zip(a, b))
    for p in a:
        if p.family != "rastrigin":  # every family but Rastrigin has a known minimiser with zero gradient
            xs = p.x_star()
            assert p.objective.grad(xs).abs().max() < 1e-9


def test_teaching_functions_have_their_minima():
    for name in TEACHING_FUNCTIONS:
        f = teaching_function(name)
        for m in f.minima:
            g = f.grad(torch.tensor([m], dtype=torch.float64))
            assert g.norm() < 1e-2, (name, m, g)
    q = teaching_function("quadratic", cond=50, angle=45)
    ev = torch.linalg.eigvalsh(q.hessian(torch.zeros(1, 2, dtype=torch.float64)))
    assert math.isclose(float(ev[0, -1] / ev[0, 0]), 50, rel_tol=1e-9)


def test_float32_and_float64_supported():
    q, x0 = quadratic_split("test", dtype=torch.float32)
    assert q.value(x0).dtype == torch.float32
    q64 = q.to(dtype=torch.float64)
    assert q64.value(x0.double()).dtype == torch.float64


def test_bad_shapes_and_names():
    q, x0 = quadratic_split("test")
    with pytest.raises(ShapeError, match="batch"):
        q.check(x0[:5])
    with pytest.raises(ShapeError, match="coordinates"):
        q.check(torch.zeros(32, 3, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"\(B, N\)"):
        q.check(torch.zeros(10, dtype=torch.float64))
    with pytest.raises(ShapeError):
        random_quadratics(0, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UnknownNameError, match="unknown 2-D function"):
        teaching_function("nope")
    with pytest.raises(ShapeError):
        Rosenbrock(1)
