"""Issue 23: stopping rules (run, LSR1Solver, LSR1Optimizer), step lengthening in the safeguard, and no
re-evaluation of an accepted trial point in inference."""
from __future__ import annotations

import math

import pytest
import torch

from lsr1_core.errors import LSR1Error
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Optimizer, LSR1Solver
from lsr1_core.learned.safeguard import GROWTH, armijo_step
from lsr1_core.objectives import Rosenbrock
from lsr1_core.objectives.base import Objective
from lsr1_core.solvers import make_solver, run


class _Quadratic(Objective):
    """f = ½ Σ a_i x_i² (batched), counting value_and_grad calls."""
    name, dim, batch = "q", None, None

    def __init__(self, a):
        self.a = torch.as_tensor(a, dtype=torch.float64)
        self.calls = 0

    def value(self, x):
        return 0.5 * (self.a * x * x).sum(-1)

    def value_and_grad(self, x):
        self.calls += 1
        return self.value(x), self.a * x


def _qn(**kw):
    return LSR1Solver(model=LSR1Net(LSR1Config.qn()).double(), **kw)


def test_a_converged_row_stops_and_costs_nothing_after():
    r = Rosenbrock()
    x0 = torch.tensor([[-1.2, 1.0], [0.5, 0.5]], dtype=torch.float64)
    free = run(_qn(), r, x0, 80)
    tr = run(_qn(), r, x0, 80, gtol=1e-8)
    assert bool(tr.converged.all()) and not bool(free.converged.any())
    for row in range(2):
        k = int(tr.stopped_at[row])
        assert 0 < k < 80
        assert float(tr.g[k, row].abs().max()) <= 1e-8  # met where it says
        assert float(tr.g[k - 1, row].abs().max()) > 1e-8  # and not a step before
        assert int(tr.row_evals[k:, row].sum()) == 0  # nothing paid after
        assert torch.equal(tr.f[k:, row], tr.f[k, row].expand(80 - k + 1))  # frozen
        assert "gtol" in tr.stop_reason[row]
    # the two rows stop at different steps, and each pays only for its own steps
    assert int(tr.stopped_at[0]) != int(tr.stopped_at[1])
    assert (tr.total_evals() < free.total_evals()).all()
    assert float(tr.f[-1].max()) < 1e-14


def test_stationary_start_costs_no_step_and_solver_tolerances_apply():
    r = Rosenbrock()
    x0 = torch.ones(1, 2, dtype=torch.float64)
    tr = run(_qn(gtol=1e-10), r, x0, 20)  # the solver's own tolerance
    assert int(tr.stopped_at[0]) == 0 and int(tr.total_evals()[0]) == 0 and int(tr.evals.sum()) == 0


@pytest.mark.parametrize("solver", ["lbfgs", "adam", "gd"])
def test_classical_solvers_stop_by_ftol(solver):
    q = _Quadratic([1.0, 3.0])
    s = make_solver(solver, **({"memory": 4, "line_search": "strong_wolfe"} if solver == "lbfgs" else {"lr": 0.1}))
    tr = run(s, q, torch.tensor([[1.0, 1.0]], dtype=torch.float64), 2000, ftol=1e-12)
    k = int(tr.stopped_at[0])
    assert 0 < k < 2000 and "ftol" in tr.stop_reason[0]
    f0, f1 = float(tr.f[k - 1, 0]), float(tr.f[k, 0])
    assert (f0 - f1) / max(abs(f0), abs(f1), 1.0) <= 1e-12


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), "1e-5", True, [1e-5]])
def test_bad_tolerances_are_refused_naming_the_argument(bad):
    r, x0 = Rosenbrock(), torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises(LSR1Error, match="gtol"):
        run(_qn(), r, x0, 3, gtol=bad)
    with pytest.raises(LSR1Error, match="ftol"):
        run(make_solver("lbfgs"), r, x0, 3, ftol=bad)
    with pytest.raises(LSR1Error, match="gtol"):
        _qn(gtol=bad)
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(LSR1Error, match="tolerance_grad"):
        LSR1Optimizer([p], model=LSR1Net(LSR1Config.qn()), tolerance_grad=bad)
    with pytest.raises(LSR1Error, match="tolerance_change"):
        LSR1Optimizer([p], model=LSR1Net(LSR1Config.qn()), tolerance_change=bad)


def test_optimizer_stops_calling_the_closure_once_converged():
    torch.manual_seed(0)
    X = torch.randn(64, 5, dtype=torch.float64)
    y = X @ torch.arange(1.0, 6.0, dtype=torch.float64)
    w = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = LSR1Optimizer([w], model=LSR1Net(LSR1Config.qn()), tolerance_grad=1e-9)
    calls = []

    def closure():
        opt.zero_grad()
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        calls.append(float(loss.detach()))
        return loss

    per_step = []
    for _ in range(60):
        before = len(calls)
        opt.step(closure)
        per_step.append(len(calls) - before)
    assert opt.converged and opt.stop_reason is not None
    first = next(i for i, n in enumerate(per_step) if n == 0)
    assert all(n == 0 for n in per_step[first:])  # nothing after convergence
    assert first < 40
    torch.testing.assert_close(w.detach(), torch.arange(1.0, 6.0, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    # changing the parameters by hand voids convergence: the next step evaluates again
    with torch.no_grad():
        w.add_(0.5)
    before = len(calls)
    opt.step(closure)
    assert len(calls) > before  # (its memory holds the exact curvature: one step solves the quadratic again)
    torch.testing.assert_close(w.detach(), torch.arange(1.0, 6.0, dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_lengthening_grows_a_far_too_short_step_and_keeps_armijo():
    q = _Quadratic([1.0, 1.0])
    x = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    f, g = q.value_and_grad(x)
    s = 1e-3 * g  # a thousandth of the Newton step
    plain = armijo_step(q, x, f, g, s, g)
    grown = armijo_step(q, x, f, g, s, g, grow=10)
    assert float(plain.t[0]) == 1.0 and not bool(plain.grown[0])
    t = float(grown.t[0])
    assert bool(grown.grown[0]) and t >= GROWTH ** 4  # grown at least 256× ...
    assert t <= 1e3 * GROWTH  # ... but never past the minimiser by more than one growth factor
    assert float(grown.f[0]) < 0.6 * float(plain.f[0])
    # it stops once the slope has flattened below Wolfe's c2 = 0.9 of the start's (as strong Wolfe would accept)
    slope0, slope = float((g * s).sum()), float((grown.g * s).sum())
    assert 0 < slope < 0.9 * slope0
    assert float(grown.f[0]) <= float(f[0]) - 1e-4 * t * float((g * s).sum())  # Armijo at the accepted point
    torch.testing.assert_close(grown.f, q.value(grown.x))  # f and g belong to the returned point
    torch.testing.assert_close(grown.g, q.a * grown.x)


def test_a_step_with_enough_curvature_is_never_lengthened():
    q = _Quadratic([1.0, 10.0])
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    f, g = q.value_and_grad(x)
    newton = g / q.a
    out = armijo_step(q, x, f, g, newton, g, grow=10)
    assert not bool(out.grown[0]) and out.evals == 1


def test_accepted_trial_is_not_evaluated_again_in_inference():
    q = _Quadratic([1.0, 1.0])
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    f, g = q.value_and_grad(x)
    q.calls = 0
    out = armijo_step(q, x, f, g, 4 * g, g)  # t = 1: f(−3x) > f; ½: f(−x) = f (no decrease); ¼: accepted
    assert float(out.t[0]) == 0.25 and out.evals == 3 and q.calls == 3
    torch.testing.assert_close(out.x, x - 0.25 * 4 * g)
    torch.testing.assert_close(out.f, q.value(out.x))
    torch.testing.assert_close(out.g, q.a * out.x)
    # on the graph (meta-training) the accepted point is evaluated once more, so gradients flow through it
    s = (4 * g).clone().requires_grad_(True)
    q.calls = 0
    out = armijo_step(q, x, f, g, s, g)
    assert out.evals == 4 and q.calls == 4 and out.f.requires_grad


def test_lengthening_is_scale_free():
    """f × c changes nothing but the rounding: the same steps and the same lengthened ones."""
    r = Rosenbrock()
    x0 = torch.tensor([[-1.2, 1.0]], dtype=torch.float64)

    class Scaled(Objective):
        name, dim, batch = "scaled", 2, None

        def __init__(self, c):
            self.c = c

        def value(self, x):
            return self.c * r.value(x)

    # (rounding differences grow along Rosenbrock's valley with or without lengthening: 1e-12 by step 8, 1e-6
    # by step 20; compare the first 10 steps)
    base = run(_qn(), r, x0, 10)
    assert bool(base.extras["lengthened"].any())
    for c in (1e-4, 1e4):
        tr = run(_qn(), Scaled(c), x0, 10)
        torch.testing.assert_close(tr.f[:, 0] / c, base.f[:, 0], rtol=1e-7, atol=0)
        assert torch.equal(tr.extras["lengthened"], base.extras["lengthened"])
    assert math.isfinite(float(base.f[-1, 0]))


def test_interpolating_backtrack_needs_fewer_trials_and_keeps_armijo():
    q = _Quadratic([1.0, 4.0])
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    f, g = q.value_and_grad(x)
    s = 300 * g  # far too long
    halve = armijo_step(q, x, f, g, s, g)
    interp = armijo_step(q, x, f, g, s, g, backtrack="interpolate")
    assert interp.evals < halve.evals
    for out in (halve, interp):
        t = float(out.t[0])
        assert 0 < t < 1
        assert float(out.f[0]) <= float(f[0]) - 1e-4 * t * float((g * s).sum())
        torch.testing.assert_close(out.f, q.value(out.x))
    assert float(interp.f[0]) < float(f[0])


def test_backtrack_rule_is_validated_and_overridable():
    with pytest.raises(LSR1Error, match="backtrack"):
        LSR1Config.qn(backtrack="bisect")
    assert LSR1Config.qn().backtrack == "interpolate" and LSR1Config().backtrack == "halve"
    assert _qn(backtrack="halve").net.config.backtrack == "halve"
