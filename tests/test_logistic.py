"""The batched logistic-regression family on badly scaled data (lsr1_core.objectives.logistic)."""
import pytest
import torch

from lsr1_core.errors import LSR1Error, ShapeError
from lsr1_core.objectives.logistic import BatchedLogistic, logistic_family

torch.set_num_threads(1)


def _family(batch=3, n=6, m=30, seed=0):
    return logistic_family(batch, torch.Generator().manual_seed(seed), n=n, m=m)


def test_gradient_and_hessian_match_autograd():
    obj, x0 = _family()
    f, g = obj.value_and_grad(x0)
    xx = x0.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(obj.value(xx).sum(), xx)
    assert torch.allclose(g, ga, rtol=1e-10, atol=1e-12)
    H = obj.hessian(x0)
    Ha = torch.stack([torch.autograd.functional.hessian(lambda w, b=b: obj.value(
        torch.cat([x0[:b], w.unsqueeze(0), x0[b + 1:]]))[b], x0[b]) for b in range(x0.shape[0])])
    assert torch.allclose(H, Ha, rtol=1e-8, atol=1e-10)
    v = torch.randn_like(x0)
    assert torch.allclose(obj.hvp(x0, v), (H @ v.unsqueeze(-1)).squeeze(-1), rtol=1e-10, atol=1e-12)


def test_minimizer_is_stationary_and_lowest():
    obj, x0 = _family(batch=4, n=10, m=40)
    xs = obj.minimizer()
    fs, gs = obj.value_and_grad(xs)
    assert float(gs.norm(dim=-1).max()) < 1e-9
    # f* below the start and below random points near x*
    assert bool((fs < obj.value(x0)).all())
    near = xs + 1e-3 * torch.randn(4, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert bool((obj.value(near) >= fs - 1e-12).all())
    assert torch.allclose(obj.min_value(), fs)


def test_badly_scaled_and_reproducible():
    obj, x0 = _family(batch=2, n=20, m=80, seed=5)
    again, x1 = _family(batch=2, n=20, m=80, seed=5)
    assert torch.equal(obj.A, again.A) and torch.equal(x0, x1)
    scales = obj.A.std(dim=1)  # per feature
    ratio = scales.max(dim=-1).values / scales.min(dim=-1).values
    assert bool((ratio > 10).all())  # three decades of feature scale by default
    assert set(obj.y.unique().tolist()) == {-1.0, 1.0}
    # rows are independent problems
    f_all = obj.value(x0)
    f_one = BatchedLogistic(obj.A[1:], obj.y[1:], obj.lam).value(x0[1:])
    assert torch.allclose(f_all[1:], f_one)


def test_bad_input():
    obj, x0 = _family()
    with pytest.raises(ShapeError):
        obj.value(x0[:2])
    with pytest.raises(LSR1Error):
        BatchedLogistic(torch.ones(2, 3, 4), torch.ones(2, 3), lam=0.0)
    with pytest.raises(LSR1Error):
        BatchedLogistic(torch.ones(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(LSR1Error):
        logistic_family(0, torch.Generator())
