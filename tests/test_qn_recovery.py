"""The qn form's recovery rule (LSR1Config.restart): a safeguard that runs out of halvings keeps searching by
quadratic interpolation, and the problem's memory is forgotten, so no run freezes for good."""
from __future__ import annotations

import pytest
import torch

from lsr1_core.errors import LSR1Error
from experiments import generality
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.learned.io import load_model
from lsr1_core.learned.safeguard import armijo_step
from lsr1_core.objectives.base import Objective
from lsr1_core.objectives.transforms import Scaled
from lsr1_core.solvers import run


def _lse_run(restart: bool, c: float = 1.0, steps: int = 20, extrapolate: int | None = None,
             backtrack: str | None = None):
    obj, x0, _ = generality.build_problem("logsumexp", 100, "base", 0)
    rules = {k: v for k, v in (("extrapolate", extrapolate), ("backtrack", backtrack)) if v is not None}
    solver = LSR1Solver(model=LSR1Net(LSR1Config.qn(restart=restart, **rules)).double())
    return run(solver, Scaled(obj, c=c), x0[1:2].clone(), steps)


def test_without_recovery_the_logsumexp_run_freezes_and_with_it_moves_on():
    """Found by the generality benchmark: a pair with pᵀq ≈ 5e-14 from a nearly linear stretch makes H ≈ 1e11
    along it; 30 halvings still overshoot and the old rule stays at that point for good."""
    # (the ablation with the search as it was then — halving, no lengthening: the newer searches take other paths,
    # which this pair never spoils)
    frozen = _lse_run(restart=False, extrapolate=0, backtrack="halve")
    f = frozen.f[:, 0]
    assert float(f[20]) == float(f[6])  # the ablation: not one step accepted in 14
    moving = _lse_run(restart=True)
    g = moving.f[:, 0]
    assert torch.all(g[1:] <= g[:-1] * (1 + 1e-12))  # never uphill
    assert float(g[20]) < 0.9 * float(f[20])
    assert int(moving.evals.sum()) < int(frozen.evals.sum()) / 2  # and much cheaper than the frozen run's trials


def test_recovery_works_at_every_scale():
    """Up to the recovered step the runs on f × c are the same to rounding; the recovered step is accepted at a
    length (10⁻¹² of the proposed one) where Armijo's decrease is below f's rounding, so from there the runs on
    f × c differ at the 10⁻⁶ level and drift apart (chaotically) — but every one keeps moving."""
    base = _lse_run(True, 1.0, 12).f[:, 0]
    for c in (1e-3, 1e3):
        f = _lse_run(True, c, 12).f[:, 0] / c
        torch.testing.assert_close(f[:5], base[:5], rtol=1e-12, atol=0)
        assert float(f[12]) < 0.9 * float(f[4])


class _Quadratic(Objective):
    name, dim, batch = "q", None, None

    def value(self, x):
        return 0.5 * (x * x).sum(-1)


def test_extended_search_shortens_a_step_that_is_off_by_twelve_orders():
    obj, x = _Quadratic(), torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    f, g = obj.value_and_grad(x)
    s = 1e12 * g  # 1e12 times the Newton step
    plain = armijo_step(obj, x, f, g, s, g, max_halvings=30)
    assert float(plain.t[0]) == 0.0 and not bool(plain.extended[0])  # 2^-30 ≈ 1e-9 is not enough
    ext = armijo_step(obj, x, f, g, s, g, max_halvings=30, extend=30)
    assert bool(ext.extended[0]) and 0 < float(ext.t[0]) < 1e-9
    assert float(ext.f[0]) < float(f[0]) and ext.evals <= 1 + 30 + 30 + 1
    # where the halvings succeed, the extension changes nothing
    a = armijo_step(obj, x, f, g, 3.0 * g, g, max_halvings=30)
    b = armijo_step(obj, x, f, g, 3.0 * g, g, max_halvings=30, extend=30)
    assert float(a.t[0]) == float(b.t[0]) and a.evals == b.evals and not bool(b.extended[0])


class _OnlyAtStart(Objective):
    """(x − 1)², finite only at its starting point: no trial away from it can pass."""
    name, dim, batch = "only_at_start", None, None

    def __init__(self, x0):
        self.x0 = x0

    def value(self, x):
        same = (x == self.x0).all(-1)
        return torch.where(same, ((x - 1) ** 2).sum(-1), torch.full_like(x[:, 0], float("nan")))


def test_a_row_where_no_trial_passes_restarts_from_a_probe_and_stays_put():
    from lsr1_core.learned.qn import qn_init_state, qn_step
    net = LSR1Net(LSR1Config.qn()).double()
    x0 = torch.zeros(2, 3, dtype=torch.float64)  # at 0 no shortened step rounds back to the start
    obj = _OnlyAtStart(x0)
    st = qn_init_state(net, obj, x0)
    st, out = qn_step(net, st, obj, max_halvings=4)
    assert torch.equal(st.x, x0) and bool(out.extras["restarted"].all())
    assert out.extras["evals"] == 1 + 1 + 4 + 30 + 1 + 1  # probe, first trial, halvings, extension, final, new probe
    assert all(float(t.detach().abs().sum()) == 0 for t in (st.P, st.Q, st.W, st.U))
    assert bool(torch.isfinite(st.gamma).all()) and bool((st.gamma > 0).all())
    # away from 0 the search ends on a step that rounds back to the start: a null step, also a restart
    x1 = torch.full((1, 3), 5.0, dtype=torch.float64)
    obj1 = _OnlyAtStart(x1)
    st1 = qn_init_state(net, obj1, x1)
    st1, out1 = qn_step(net, st1, obj1, max_halvings=4)
    assert torch.equal(st1.x, x1) and bool(out1.extras["restarted"].all()) and out1.extras["evals"] <= 38


def test_the_rule_is_a_config_field_cards_carry():
    assert LSR1Config.qn().restart is True and LSR1Config().restart is False
    with pytest.raises(LSR1Error, match="restart"):
        LSR1Config.qn(restart="yes")
    net, card = load_model("pretrained/qn_quadratic")
    assert net.config.restart is True and "restart" in card["inference_change"]
    off = LSR1Solver(checkpoint="pretrained/qn_quadratic", restart=False)
    assert off.net.config.restart is False
    with pytest.raises(LSR1Error, match="qn form only"):
        LSR1Solver(checkpoint="pretrained/quadratic", restart=True)
