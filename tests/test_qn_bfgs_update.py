"""The qn form's update='bfgs', h0='bb' and strong-Wolfe search (issue 23), and LSR1Config.qn_bfgs()."""
import math

import pytest
import torch

from lsr1_core.errors import LSR1Error
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.learned import compact
from lsr1_core.learned.qn import qn_operator, rebuild, two_scale_complement
from lsr1_core.learned.safeguard import WOLFE_C2, wolfe_step
from lsr1_core.objectives.base import Objective
from lsr1_core.objectives.functions import Rosenbrock, TEACHING_FUNCTIONS, teaching_function
from lsr1_core.objectives.quadratic import random_quadratics
from lsr1_core.operators import LBFGSInverse
from lsr1_core.solvers import make_solver, run
from lsr1_core.solvers.sr1 import envelope_scale


def test_config_refuses_bad_update():
    with pytest.raises(LSR1Error, match="update"):
        LSR1Config.qn(update="dfp")
    with pytest.raises(LSR1Error, match="fallback"):
        LSR1Config.qn(update="bfgs", fallback="skip")
    with pytest.raises(LSR1Error, match="backtrack"):
        LSR1Config.qn(backtrack="moré")
    cfg = LSR1Config.qn_bfgs()
    assert (cfg.update, cfg.h0, cfg.gamma_factor, cfg.backtrack, cfg.form) == ("bfgs", "bb", 1.0, "wolfe", "qn")
    # the SR1 form's defaults are unchanged
    assert (LSR1Config.qn().update, LSR1Config.qn().h0) == ("sr1", "two_scale")


def _pairs(B=3, m=5, N=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(B, N, N, generator=g, dtype=torch.float64)
    H = A @ A.transpose(1, 2) + 0.1 * torch.eye(N, dtype=torch.float64)
    P = torch.randn(B, m, N, generator=g, dtype=torch.float64)
    Q = P @ H  # convex: every pair has curvature
    return P, Q


def test_bfgs_update_is_the_lbfgs_two_loop():
    """update='bfgs' with h0='bb' is the classical L-BFGS inverse of the same pairs (explicit and compact)."""
    P, Q = _pairs()
    B, m, N = P.shape
    cfg = LSR1Config.qn_bfgs()
    gamma = envelope_scale(P, Q, torch.ones(B, 1, dtype=torch.float64), 1.0, newest=True)
    pq, qq = (P[:, -1] * Q[:, -1]).sum(-1, keepdim=True), (Q[:, -1] * Q[:, -1]).sum(-1, keepdim=True)
    assert torch.allclose(gamma, pq / qq)
    U = torch.zeros_like(P)
    W = rebuild(P, Q, U, gamma, cfg.skip_eps, "bfgs", sr1=False)
    assert not bool(W.any())  # no SR1 vector
    op = qn_operator(cfg, W, P, Q, gamma)
    ref = LBFGSInverse(P, Q, torch.ones(B, m, dtype=torch.bool), gamma)
    u = torch.randn(B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(op.matvec(u), ref.matvec(u), rtol=1e-10, atol=1e-12)
    co = compact.operator_from_pairs(P, Q, gamma, cfg.skip_eps, "bfgs", "bb", two_scale_complement, sr1=False)
    assert torch.allclose(co.matvec(u), ref.matvec(u), rtol=1e-9, atol=1e-11)
    from lsr1_core.learned.qn import two_loop
    rho = 1 / (P * Q).sum(-1)
    assert torch.allclose(two_loop(P, Q, rho, gamma, u, m), ref.matvec(u), rtol=1e-10, atol=1e-12)
    # the secant condition of the newest pair holds exactly (BFGS), the SR1 form's vectors are not all zero
    assert torch.allclose(op.matvec(Q[:, -1]), P[:, -1], rtol=1e-9, atol=1e-11)
    assert bool(rebuild(P, Q, U, 0.5 * gamma, cfg.skip_eps, "bfgs").any())


class _Ramp(Objective):
    """f = softplus(a·x₀) + ½ε‖x‖²-ish: nearly linear far out (a step must grow), NaN beyond |x| > wall."""

    def __init__(self, wall=None):
        self.wall = wall

    def value(self, x):
        f = torch.nn.functional.softplus(-x[:, 0]) + 1e-6 * (x * x).sum(-1)
        if self.wall is not None:
            f = torch.where(x.abs().amax(-1) > self.wall, torch.full_like(f, math.nan), f)
        return f


def test_wolfe_step_lengthens_and_meets_strong_wolfe():
    obj = _Ramp()
    x = torch.tensor([[-5.0, 1.0]], dtype=torch.float64)
    f, g = obj.value_and_grad(x)
    s = 1e-3 * g  # far too short: the search must lengthen
    safe = wolfe_step(obj, x, f, g, s, g)
    assert float(safe.t[0]) > 1 and bool(safe.grown[0])
    slope0 = float((g * s).sum())
    assert float(safe.f[0]) <= float(f[0]) - 1e-4 * float(safe.t[0]) * slope0  # Armijo
    slope_t = float((safe.g * s).sum())
    assert abs(slope_t) <= WOLFE_C2 * abs(slope0) + 1e-15
    assert safe.evals >= 2


def test_wolfe_step_never_accepts_a_non_finite_point_or_a_rise():
    obj = _Ramp(wall=2.0)
    x = torch.tensor([[-1.0, 0.5], [0.5, -1.5]], dtype=torch.float64)
    f, g = obj.value_and_grad(x)
    for scale in (1.0, 1e3, 1e8):
        safe = wolfe_step(obj, x, f, g, scale * g, g, extend=30)
        assert torch.isfinite(safe.f).all() and torch.isfinite(safe.g).all() and torch.isfinite(safe.x).all()
        assert bool((safe.f <= f).all())
    # a non-descent step is replaced by the fallback
    safe = wolfe_step(obj, x, f, g, -g, g)
    assert bool(safe.replaced.all()) and bool((safe.f <= f).all())


def _solve(cfg, obj, x0, steps=200):
    return run(LSR1Solver(model=LSR1Net(cfg)), obj, x0, steps, gtol=1e-9, ftol=1e-15)


def test_qn_bfgs_solves_rosenbrock_like_lbfgs_and_never_rises():
    obj = Rosenbrock()
    x0 = torch.tensor([[-1.2, 1.0], [2.0, -1.5]], dtype=torch.float64)
    tr = _solve(LSR1Config.qn_bfgs(), obj, x0)
    assert bool((tr.f[-1] < 1e-12).all())
    assert bool((tr.f[1:] <= tr.f[:-1] + 1e-12).all())
    lb = run(make_solver("lbfgs", memory=8, line_search="strong_wolfe"), obj, x0, 200, gtol=1e-9, ftol=1e-15)
    # a margin, not digits: at most 1.5× L-BFGS's evaluations on these two classic starts
    assert int(tr.row_evals.sum()) <= 1.5 * int(lb.row_evals.sum())


def test_qn_bfgs_compact_and_explicit_paths_agree():
    obj = Rosenbrock(10)
    x0 = torch.full((1, 10), -1.0, dtype=torch.float64)
    fast = _solve(LSR1Config.qn_bfgs(), obj, x0)
    old = compact.FORCE_EXPLICIT
    compact.FORCE_EXPLICIT = True
    try:
        slow = _solve(LSR1Config.qn_bfgs(), obj, x0)
    finally:
        compact.FORCE_EXPLICIT = old
    assert torch.allclose(fast.f[:8], slow.f[:8], rtol=1e-9, atol=1e-12)
    assert float(fast.f[-1].max()) < 1e-10 and float(slow.f[-1].max()) < 1e-10
    assert abs(int(fast.row_evals.sum()) - int(slow.row_evals.sum())) <= 0.2 * int(slow.row_evals.sum())


def test_qn_bfgs_is_scale_free():
    obj, x0 = random_quadratics(8, 2, generator=torch.Generator().manual_seed(5))

    class Scaled(Objective):
        def value(self, x):
            return 1e4 * obj.value(x)

    a = run(LSR1Solver(model=LSR1Net(LSR1Config.qn_bfgs())), obj, x0, 6)
    b = run(LSR1Solver(model=LSR1Net(LSR1Config.qn_bfgs())), Scaled(), x0, 6)
    assert torch.allclose(a.x, b.x, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", sorted(TEACHING_FUNCTIONS))
def test_qn_bfgs_on_the_teaching_functions_never_blows_up(name):
    obj = teaching_function(name)
    x0 = torch.tensor([list(obj.default_start), [2.0, -1.5]], dtype=torch.float64)
    tr = _solve(LSR1Config.qn_bfgs(), obj, x0, steps=100)
    assert int((tr.diverged_at >= 0).sum()) == 0
    assert bool((tr.f[1:] <= tr.f[:-1] + 1e-12 * (1 + tr.f[:-1].abs())).all())
    assert bool((tr.f[-1] <= tr.f[0]).all())


def test_solver_option_and_optimizer_with_qn_bfgs():
    """LSR1Solver(update=…) switches a card's update; LSR1Optimizer runs qn_bfgs like torch.optim.LBFGS."""
    from lsr1_core.learned import LSR1Optimizer

    s = LSR1Solver(checkpoint="pretrained/qn_quadratic", update="bfgs", h0="bb", backtrack="wolfe")
    assert (s.net.config.update, s.net.config.h0, s.net.config.backtrack) == ("bfgs", "bb", "wolfe")
    with pytest.raises(LSR1Error, match="update"):
        LSR1Solver(checkpoint="pretrained/qn_quadratic", update="newton")
    g = torch.Generator().manual_seed(0)
    A, b = torch.randn(40, 30, generator=g), torch.randn(40, generator=g)
    w = torch.nn.Parameter(torch.zeros(30))
    opt = LSR1Optimizer([w], model=LSR1Net(LSR1Config.qn_bfgs()))

    def closure():
        opt.zero_grad()
        loss = ((A @ w - b) ** 2).mean() + 1e-2 * (w * w).sum()
        loss.backward()
        return loss

    for _ in range(60):
        loss = opt.step(closure)
    w_star = torch.linalg.solve(A.T @ A / 40 + 1e-2 * torch.eye(30), A.T @ b / 40)
    f_star = float(((A @ w_star - b) ** 2).mean() + 1e-2 * (w_star * w_star).sum())
    # float32: the loss is at the optimum to its own rounding (torch's tolerance_change then stops the run)
    assert float(loss) <= f_star * (1 + 1e-5)
    assert opt.converged


def test_qn_bfgs_takes_the_two_loop_path(monkeypatch):
    """update='bfgs' with zero heads never builds SR1 vectors or a Gram matrix: the O(lN) two-loop path."""
    from lsr1_core.learned import qn as qn_mod

    def boom(*a, **k):
        raise AssertionError("the compact path was taken")

    monkeypatch.setattr(qn_mod.compact, "propose", boom)
    monkeypatch.setattr(qn_mod, "rebuild", boom)
    obj = Rosenbrock(20)
    tr = _solve(LSR1Config.qn_bfgs(), obj, torch.full((1, 20), -1.0, dtype=torch.float64))
    assert float(tr.f[-1, 0]) < 1e-10


def test_qn_bfgs_probe_sets_gamma_only():
    """probe_pair=False (qn_bfgs): the probe's γ scales the first step, its pair never enters the memory (the first
    direction is γ·g exactly), also where a restart probes again; probe_pair=True (the SR1 form, and older cards,
    which load with the field's default) stores it."""
    from lsr1_core.learned.qn import qn_init_state, restart_rows
    from lsr1_core.solvers.sr1 import probe_scale

    r = Rosenbrock(6)
    x0 = torch.linspace(-1.2, 1.0, 6, dtype=torch.float64).unsqueeze(0)
    f0, g0 = r.value_and_grad(x0)
    _, _, gamma = probe_scale(r, x0, g0, 1e-3)
    tr = run(LSR1Solver(), r, x0, 1)
    assert torch.allclose(tr.d[0], gamma * g0, rtol=1e-12)
    kept = run(LSR1Solver(probe_pair=True), r, x0, 1)
    assert not torch.allclose(kept.d[0], gamma * g0, rtol=1e-3)
    for probe_pair in (False, True):
        net = LSR1Net(LSR1Config.qn_bfgs(probe_pair=probe_pair))
        st = qn_init_state(net, r, x0, f0, g0)
        assert bool((st.p == 0).all()) != probe_pair and torch.allclose(st.gamma, gamma)
        failed = torch.tensor([True])
        new, evals = restart_rows(net.config, st, r, failed, torch.tensor([False]), g0)
        assert evals == 1 and bool((new.p == 0).all()) != probe_pair
    assert LSR1Config.qn().probe_pair and LSR1Config().probe_pair
    with pytest.raises(LSR1Error, match="probe_pair"):
        LSR1Config.qn_bfgs(probe_pair="no")


def test_qn_bfgs_keeps_ten_pairs_and_the_sr1_form_eight():
    """qn_bfgs keeps scipy L-BFGS-B's default memory (10 pairs); the SR1 form and the paper form keep 8, and a
    memory asked for still wins."""
    assert LSR1Config.qn_bfgs().memory == 10 and LSR1Config.qn().memory == 8 and LSR1Config().memory == 8
    assert LSR1Config.qn_bfgs(memory=4).memory == 4
    assert LSR1Solver().net.config.memory == 10 and LSR1Solver(memory=6).net.config.memory == 6
