"""The per-step hot paths' cheaper forms give what the general forms give: the row reductions, the one-row
strong-Wolfe search, the one-row two-loop recursion, the expanded untrained step size, and the strong-Wolfe
safeguard's fallback that reuses the unit step's evaluation (every evaluation counted exactly once)."""
import math

import pytest
import torch

from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Optimizer
from lsr1_core.learned.qn import _times, two_loop
from lsr1_core.learned.safeguard import SafeStep, wolfe_step
from lsr1_core.rowops import BMM_MIN, all_finite, row_dot, row_max_abs, rows_finite, same_bits
from lsr1_core.solvers import lbfgs

F64 = torch.float64


class _Counting:
    """A batched objective from a function of (B, N) → (B,), counting its evaluations."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def value_and_grad(self, x):
        self.calls += 1
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            f = self.fn(x)
            (g,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), g


FUNCTIONS = {
    "rosenbrock": lambda x: (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(-1),
    "ill_quadratic": lambda x: 0.5 * (x * x * 10 ** torch.linspace(0, 4, x.shape[1], dtype=x.dtype)).sum(-1),
    "exp": lambda x: torch.exp(x).sum(-1) - 2 * x.sum(-1),
    # NaN beyond a box: the searches must shorten out of it alike
    "nan_outside": lambda x: torch.where(x.abs().amax(-1) > 3, torch.full_like(x[:, 0], math.nan),
                                         (x ** 4).sum(-1) - (x * x).sum(-1)),
}


def test_row_reductions_match_their_plain_forms():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(5, 40, generator=g, dtype=F64)
    t[1, 3], t[2, 7], t[3, 0] = math.nan, math.inf, -math.inf
    ref = torch.linalg.vector_norm(t, float("inf"), dim=-1)
    got = row_max_abs(t)
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    assert torch.equal(got[~torch.isnan(ref)], ref[~torch.isnan(ref)])
    assert rows_finite(t).tolist() == torch.isfinite(t).all(-1).tolist() == [True, False, False, False, True]
    assert not all_finite(t) and all_finite(t[[0, 4]]) and all_finite(t[:, :0])
    assert row_max_abs(t[:, :0]).tolist() == [0.0] * 5 and rows_finite(t[:, :0]).all()
    # finite but huge entries are finite (a sum or a norm would overflow)
    assert rows_finite(torch.full((1, 8), 3e38)).item()
    assert all_finite(torch.full((1, 8), 3e38)) and all_finite(torch.tensor([3e38, -3e38, 3e38, 3e38]))
    for bad in (math.nan, math.inf, -math.inf):  # one bad entry anywhere, among finite ones that cancel or overflow
        for pos in (0, 17, 39):
            u = torch.full((40,), 3e38)
            u[pos] = bad
            assert not all_finite(u) and not all_finite(u.double())
        u = torch.zeros(3, 7, dtype=torch.float32)
        u[2, 6] = bad
        assert not all_finite(u) and not all_finite(u.t())
    # a dot product of long rows takes the matrix-product form: the same value up to summation order
    a, b = torch.randn(3, BMM_MIN + 5, generator=g, dtype=F64), torch.randn(3, BMM_MIN + 5, generator=g, dtype=F64)
    assert torch.allclose(row_dot(a, b), (a * b).sum(-1), rtol=1e-12, atol=1e-9)
    assert torch.equal(row_dot(a[:, :10], b[:, :10]), (a[:, :10] * b[:, :10]).sum(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_one_row_strong_wolfe_takes_the_batched_search_s_decisions(name, dtype, monkeypatch):
    """Step, value, gradient, evaluations and the Wolfe flag identical to the batched search on a batch of one
    (the same arithmetic in the same precision), over starts, directions, trial steps and budgets that exercise
    extrapolation, zoom, a tiny bracket, running out of trials and NaN trial points."""
    gen = torch.Generator().manual_seed(hash(name) % 1000)
    paths = set()
    for _ in range(40):
        obj = _Counting(FUNCTIONS[name])
        x = (1.5 * torch.randn(1, 5, generator=gen, dtype=F64)).to(dtype)
        f0, g0 = obj.value_and_grad(x)
        if not torch.isfinite(f0).all():
            continue
        d = g0 * torch.rand(1, 5, generator=gen, dtype=F64).to(dtype) * 10 ** (5 * torch.rand(1, generator=gen).item() - 3)
        t0 = torch.full((1,), 10 ** (3 * torch.rand(1, generator=gen).item() - 2), dtype=dtype)
        for max_evals, tol in ((25, 1e-9), (3, 1e-9), (25, torch.full((1,), 1e-3, dtype=dtype))):
            out = []
            for one in (False, True):
                monkeypatch.setattr(lbfgs, "ONE_ROW", one)
                first = []
                out.append(lbfgs.strong_wolfe(obj, x, d, f0, g0, t0, max_evals=max_evals, tol_change=tol,
                                              first=first) + (first[0],))
            (t1, f1, gr1, e1, ok1, fst1), (t2, f2, gr2, e2, ok2, fst2) = out
            assert torch.equal(t1, t2) and e1 == e2 and torch.equal(ok1, ok2)
            assert torch.equal(f1, f2) or (f1.isnan().all() and f2.isnan().all())
            assert torch.equal(gr1.nan_to_num(), gr2.nan_to_num())
            assert torch.equal(fst1[0].nan_to_num(), fst2[0].nan_to_num())
            paths.add((e1 > 1, bool(ok1)))
    assert (True, True) in paths, paths  # more than the first trial was exercised


def test_one_row_strong_wolfe_reads_a_callable_tolerance_only_for_a_zoom(monkeypatch):
    obj = _Counting(FUNCTIONS["ill_quadratic"])
    x = torch.ones(1, 4, dtype=F64)
    f0, g0 = obj.value_and_grad(x)
    asked = []

    def tol():
        asked.append(1)
        return 1e-9

    H = 10 ** torch.linspace(0, 4, 4, dtype=F64)
    lbfgs.strong_wolfe(obj, x, g0 / H, f0, g0, torch.ones(1, dtype=F64), tol_change=tol)  # the Newton step: accepted
    assert asked == []
    lbfgs.strong_wolfe(obj, x, 50 * g0, f0, g0, torch.ones(1, dtype=F64), tol_change=tol)  # far too long: zooms
    assert asked == [1]


def test_one_row_two_loop_matches_the_batched_recursion():
    g = torch.Generator().manual_seed(3)
    m, N = 5, 30
    P = torch.randn(2, m, N, generator=g, dtype=F64)
    Q = P * (1 + torch.rand(2, m, N, generator=g, dtype=F64))  # positive curvature
    rho = 1 / (P * Q).sum(-1)
    rho[0, 2] = 0  # a pair that does not enter
    gamma = torch.tensor([[0.7], [1.3]], dtype=F64)  # (B, 1), as bfgs_propose keeps it
    u = torch.randn(2, N, generator=g, dtype=F64)
    batched = two_loop(P, Q, rho, gamma, u, m)
    for b in range(2):
        one = two_loop(P[b:b + 1], Q[b:b + 1], rho[b:b + 1], gamma[b:b + 1], u[b:b + 1], m)
        assert torch.allclose(one, batched[b:b + 1], rtol=1e-12, atol=1e-14)
    # and it is the inverse BFGS update: H q_newest = p_newest where the newest pair entered
    Hq = two_loop(P[:1], Q[:1], rho[:1], gamma[:1], Q[:1, m - 1], m)
    assert torch.allclose(Hq, P[:1, m - 1], rtol=1e-10)


def test_the_untrained_step_size_stays_one_element_per_row():
    B, N = 3, 7
    alpha = torch.ones(()).expand(B, N)
    d = torch.randn(B, N)
    assert _times(alpha, d) is d  # no pass over d
    assert torch.equal(_times(torch.full((), 0.5).expand(B, N), d), 0.5 * d)
    assert torch.equal(_times(torch.full((B, N), 2.0), d), 2 * d)
    t = torch.tensor([1.0, 0.25, 0.0])
    replaced = torch.tensor([False, True, False])
    safe = SafeStep(d, t, d, d, t, replaced, replaced, 1)
    for a in (torch.full((), 0.5).expand(B, N), torch.full((B, N), 0.5)):
        got = safe.step_size(a)
        assert got.shape == (B, N)
        assert torch.equal(got, torch.where(replaced.unsqueeze(-1), torch.ones(B, N), torch.full((B, N), 0.5))
                           * t.unsqueeze(-1))


class _StepPenalty(_Counting):
    """f = ‖x‖² plus ``penalty`` anywhere but at x0 (∇f that of ‖x‖²): no step of length below √penalty lowers f,
    so the strong-Wolfe search ends without an acceptable point and the plain search takes over."""

    def __init__(self, x0, penalty):
        super().__init__(lambda x: (x * x).sum(-1))
        self.x0, self.penalty = x0, penalty

    def value_and_grad(self, x):
        f, g = super().value_and_grad(x)
        return f + self.penalty * (x != self.x0).any(-1).to(f.dtype), g


@pytest.mark.parametrize("one_row", [True, False])
def test_wolfe_safeguard_counts_each_evaluation_once_when_it_falls_back(one_row, monkeypatch):
    """Where the strong-Wolfe search leaves a row without an acceptable point the plain search takes over; its
    first trial (the unit step) is the strong-Wolfe search's first, not evaluated again, and every evaluation is
    counted once."""
    from lsr1_core.learned import safeguard

    monkeypatch.setattr(lbfgs, "ONE_ROW", one_row)
    plain = []
    monkeypatch.setattr(safeguard, "armijo_step", lambda *a, **k: plain.append(1) or _ARMIJO(*a, **k))
    x = torch.ones(1, 4, dtype=F64)
    obj = _StepPenalty(x, 1e-3)
    f, g = obj.value_and_grad(x)
    for scale, extend in ((1e-6, 0), (1e-6, 30), (1e-5, 30)):
        obj.calls = 0
        safe = wolfe_step(obj, x, f, g, scale * g, scale * g, extend=extend)
        assert safe.evals == obj.calls
        assert float(safe.f) <= float(f)
    assert len(plain) == 3


_ARMIJO = __import__("lsr1_core.learned.safeguard", fromlist=["armijo_step"]).armijo_step


def test_optimizer_results_do_not_depend_on_the_one_row_paths(monkeypatch):
    """LSR1Optimizer (one row) with qn_bfgs's rules: the same iterates, to the rounding of the two-loop recursion's
    dot products, and the same evaluations with the batched search and recursion."""
    g = torch.Generator().manual_seed(0)
    A, b = torch.randn(40, 30, generator=g, dtype=F64), torch.randn(40, generator=g, dtype=F64)
    def fit():
        w = torch.nn.Parameter(torch.zeros(30, dtype=F64))
        opt = LSR1Optimizer([w], model=LSR1Net(LSR1Config.qn_bfgs()), tolerance_grad=None, tolerance_change=None)
        calls = [0]

        def closure():
            opt.zero_grad()
            loss = torch.log1p(torch.exp(-(A @ w) * b)).mean() + 1e-3 * (w * w).sum()
            loss.backward()
            calls[0] += 1
            return loss

        for _ in range(25):
            opt.step(closure)
        return w.detach().clone(), calls[0]

    runs = []
    for one in (True, False):
        monkeypatch.setattr(lbfgs, "ONE_ROW", one)
        runs.append(fit())
    assert torch.allclose(runs[0][0], runs[1][0], rtol=1e-9, atol=1e-12) and runs[0][1] == runs[1][1]


def test_same_bits_compares_memory_exactly():
    g = torch.Generator().manual_seed(3)
    for n in (1, 7, 1000, BMM_MIN + 3):
        a = torch.randn(1, n, generator=g)
        b = a[0].clone()
        assert same_bits(a, b) and same_bits(b, a)
        for pos in {0, n // 2, n - 1}:
            c = b.clone()
            c[pos] = torch.nextafter(c[pos], torch.tensor(math.inf))  # one ulp anywhere
            assert not same_bits(a, c)
    z = torch.zeros(4)
    assert not same_bits(z, -z)  # as memory: −0.0 is not 0.0 (a cache then only evaluates again)
    assert not same_bits(torch.ones(4), torch.ones(4, dtype=torch.float64))  # dtypes differ
    assert not same_bits(torch.ones(4), torch.ones(5)) and same_bits(torch.ones(0), torch.ones(0))
    # not contiguous: compared by value
    m = torch.randn(6, 5, generator=g)
    assert same_bits(m.t(), m.t().contiguous()) and not same_bits(m.t(), m.contiguous().reshape(5, 6))
