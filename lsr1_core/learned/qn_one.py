"""One row of the qn form's L-BFGS step (``LSR1Config.qn_bfgs()``, the default without a card) with its bookkeeping
in scalars.

:meth:`QNRule._step <lsr1_core.learned.qn.QNRule>` with the update ``"bfgs"``, the strong-Wolfe search, no diagonal
metric, zero output layers and no gradient wanted is, for a batch of one row, the two-loop recursion, one
strong-Wolfe search and a few tests on numbers. The batched code makes each of those tests with (1,)-shaped tensors
— about a hundred small tensor calls a step, ~1 ms at N = 10³ where the recursion itself costs ~0.1 ms. This path takes the
same steps with the same operations on the vectors (the same functions where it can: the pair buffer, its inner
products and the two-loop recursion of :mod:`lsr1_core.learned.pairs`, the strong-Wolfe search
:func:`~lsr1_core.solvers.lbfgs._strong_wolfe_one`, the Armijo search and the restart behind it) and makes its
decisions on numpy scalars of x's dtype, the arithmetic the batched code does element by element — so its iterates
are the batched code's, bit for bit (tests/test_qn_one.py compares them on float32 and float64 problems with
restarts, non-finite regions, lengthened and shortened steps).

It is selected with the other one-row paths (``lsr1_core.solvers.lbfgs.ONE_ROW``; False runs the batched code, the
ablation in docs/benchmarks_optimizer.md). Where it does not apply, :func:`bfgs_step_one` returns None and the
batched code runs.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..rowops import NP_SCALAR, all_finite, row_dot, row_max_abs
from ..solvers import lbfgs as _lbfgs
from . import compact
from .pairs import compact_applies, pair_stats, two_loop_rows
from .model import LSR1Operator, LSR1State
from .rules import StepOut
from .safeguard import EXTEND_TRIALS, WOLFE_C2, WOLFE_EVALS, armijo_step

ENABLED = True  # False: the batched step (with its one-row search and recursion) — for the test that they agree


def applies(net, state: LSR1State) -> bool:
    """True where :func:`bfgs_step_one` takes the step: one row on the CPU in float32/float64, the qn_bfgs rules
    (update ``"bfgs"``, strong-Wolfe search behind the Armijo safeguard, no diagonal metric) and the compact
    conditions (no gradient wanted, zero output layers and stored corrections)."""
    cfg = net.config
    x = state.x
    return (ENABLED and _lbfgs.ONE_ROW and x.shape[0] == 1 and x.device.type == "cpu" and x.dtype in NP_SCALAR
            and state.f.dtype == x.dtype and cfg.update == "bfgs" and cfg.safeguard == "armijo"
            and cfg.backtrack == "wolfe" and not cfg.diag and not x.requires_grad
            and not state.g.requires_grad and compact_applies(net, state.U))


def bfgs_step_one(net, state: LSR1State, objective, step_scale: float, max_halvings: int):
    """:meth:`QNRule._step` for one row where :func:`applies` (module docstring): returns (new state, StepOut,
    restart), or None where the pairs' statistics are not finite (the batched code then takes the step, as it does).
    ``restart``: None, or the (failed, extended) flags with which the caller restarts the row
    (:func:`~lsr1_core.learned.qn.restart_rows`, adding its evaluations to the StepOut's). The StepOut's
    ``extras["x_evaluated"]`` says the objective's last evaluation was at the new point."""
    with np.errstate(all="ignore"):  # (numpy scalars overflow to inf as the tensors do, without a warning)
        return _step(net, state, objective, step_scale, max_halvings)


def _step(net, state, objective, step_scale, max_halvings):
    cfg = net.config
    x, f, g = state.x, state.f, state.g
    p, q = state.p, state.q
    dtype = g.dtype
    F = NP_SCALAR[dtype]
    B, N = g.shape

    # --- the direction: bfgs_propose's numbers, on scalars --------------------------------------------------
    base, s0, m, P_all, Q_all = _window(state, cfg.memory)
    st = _stats(base, s0, m)  # [(pᵀq, pᵀp, qᵀq), …] in float64; None: not all finite
    if st is None:
        return None
    eps = cfg.skip_eps
    rho_list = []  # rho_where_curved, rounded to x's dtype as the batched code's ρ
    for pq, pp, qq in st:
        curved = pq > eps * math.sqrt(max(pp, 0.0)) * math.sqrt(max(qq, 0.0)) and pq > 0
        rho_list.append(float(F(1 / max(pq, _TINY64))) if curved else 0.0)
    gamma64 = None  # scale_from_curvatures(newest=True): factor·pᵀq/qᵀq of the newest pair with positive curvature
    for pq, _, qq in reversed(st):
        bb = cfg.gamma_factor * pq / max(qq, _TINY64)
        if pq > 0 and qq > 0 and math.isfinite(bb):
            gamma64 = bb
            break
    gamma_f = F(gamma64) if gamma64 is not None else F(state.gamma.reshape(-1)[0].item())
    gamma = torch.full((1, 1), float(gamma_f), dtype=dtype)
    Pv, Qv = _row_views(base)
    Pv, Qv = Pv[s0:s0 + m], Qv[s0:s0 + m]
    gamma0 = float(gamma_f)  # (y·γ, γ a number of y's dtype: the batched code's product with a 0-d tensor)
    d = two_loop_rows(Pv, Qv, rho_list, gamma0, g[0], m).unsqueeze(0)
    took = rho_list[m - 1] > 0
    if took:
        Hq = compact.LazyTensor(tuple(g.shape), dtype, g.device,
                                lambda: two_loop_rows(Pv, Qv, rho_list, gamma0, q[0], m - 1).unsqueeze(0))
        secant = rel_sq = zero = g.new_zeros(B)  # (one zero for the step's zero fields)
        rel = 0.0
    else:
        Hq = two_loop_rows(Pv, Qv, rho_list, gamma0, q[0], m - 1).unsqueeze(0)
        resid = p - Hq
        secant = (resid * resid).sum(-1)
        psq = F(st[m - 1][1])
        sec = F(secant.item())
        rel_f = sec / max(psq, F(np.finfo(F).tiny)) if psq > 0 else F(0)
        rel_sq = g.new_full((B,), float(rel_f))
        rel = float(torch.tensor(float(max(rel_f, F(0))), dtype=dtype).sqrt())
        zero = g.new_zeros(B)
    alpha = _const(dtype, step_scale, B, N)
    a_f = F(step_scale)
    s = d if a_f == 1 else alpha * d

    # --- the safeguard: wolfe_step's decisions, on scalars ------------------------------------------------------
    c1 = F(1e-4)
    gs = F(row_dot(g, s).item())
    replaced = not (gs > 0)
    if replaced:  # (the fallback is d itself)
        s = d
        gs = F(row_dot(g, s).item())
    first: list = []
    last: list = []  # [t, x − t·s] of the search's last evaluation
    fz = F(f.item())

    def rounding():
        return 4 * torch.finfo(dtype).eps * row_max_abs(x)

    t_t, f_t, g_t, evals, _ = _lbfgs._strong_wolfe_one(objective, x, s, f, g, torch.ones_like(f), 1e-4, WOLFE_C2,
                                                       WOLFE_EVALS, rounding, first, last, gs)
    noise = F(8 * torch.finfo(dtype).eps) * abs(fz)

    def accept(ft, gt, t):  # safeguard._accept: sufficient decrease, or no rise beyond f's rounding where too flat
        return math.isfinite(ft) and all_finite(gt) and (
            ft <= fz - c1 * t * gs or (c1 * t * gs <= noise and ft <= fz + noise))

    t, ft = F(t_t.item()), F(f_t.item())
    good = t > 0 and math.isfinite(t) and accept(ft, g_t, t) and ft <= fz
    extended = null = False
    if good:
        # the search's last trial, where it is the accepted one: x − float(t)·s there rounds as x − t ⊙ s here
        x_trial = last[1] if last and last[0] == float(t) else None
    elif accept(F(first[0][0].item()), first[0][1], F(1)):
        # the Armijo search behind it accepts its first trial, the unit step the search evaluated first (typically a
        # step at f's rounding level that the search refused for not lowering f): t = 1, nothing evaluated again
        t_t, (f_t, g_t), t = torch.ones_like(f), first[0], F(1)
        x_trial = last[1] if last and last[0] == 1.0 else None
    else:
        rest = armijo_step(objective, x, f, g, s, d, c1=1e-4, max_halvings=max_halvings,
                           extend=EXTEND_TRIALS if cfg.restart else 0, backtrack="interpolate", first=first[0])
        evals += rest.evals
        t_t, f_t, g_t = rest.t, rest.f, rest.g
        t = F(t_t.item())
        extended, null = bool(rest.extended[0]), bool(rest.null[0])
        x_trial = None
    if t > 0:
        x_new = x_trial if x_trial is not None else x - t_t.unsqueeze(-1) * s
    else:
        x_new = x - torch.zeros_like(s)
    grown = good and t > 1
    fired = replaced or t != 1 or null

    # --- the new state: QNRule._step's --------------------------------------------------------------------------
    evals += state.pending_evals
    W = _const(dtype, 0.0, B, m, N)
    rho = torch.tensor([rho_list], dtype=dtype)
    slots = compact.next_slots(base, s0, m)  # the pair computed where the next step stores it (no copy then)
    if slots is not None:
        p_new, q_new = torch.sub(x_new, x, out=slots[0]), torch.sub(g_t, g, out=slots[1])
        P_all._lsr1_window = (s0, m, Q_all, p_new, q_new)  # (what the next step's _window reads)
    else:
        p_new, q_new = x_new - x, g_t - g
    new = LSR1State(x=x_new, f=f_t, g=g_t, p=p_new, d=d, q=q_new, W=W, Bq=Hq, k=state.k + 1, gamma=gamma,
                    P=P_all, Q=Q_all, U=W, S=None)
    failed = t == 0 or null
    if failed:
        failed = bool(row_max_abs(g)[0] > 0)
    restarted = failed or extended  # (the caller forgets the memory: qn.restart_rows, with the flags returned)
    if a_f == 1 and not replaced and t == 1:
        step_size = alpha
    else:  # SafeStep.step_size: (1 where the step was replaced, else α) · t
        step_size = g.new_full((), float((F(1) if replaced else a_f) * t)).expand(B, N)
    out = StepOut(direction=d, step_size=step_size, operator=LSR1Operator(W, scale=gamma, bfgs=(P_all, Q_all, rho)),
                  evals=evals, vector=_const(dtype, 0.0, B, N), secant=secant,
                  secant_rel=zero if rel == 0 else g.new_full((B,), rel), learned_step=alpha, secant_rel_sq=rel_sq,
                  departure=zero, safeguard=_flag(fired), skipped=_flag(True), restarted=_flag(restarted),
                  bfgs=_flag(took), lengthened=_flag(grown),
                  extras={"x_evaluated": x_trial is not None and not restarted})
    return new, out, ((_flag(failed), _flag(extended)) if restarted else None)


_TINY64 = float(np.finfo(np.float64).tiny)


def _window(state: LSR1State, memory: int):
    """:func:`compact.append_pair` of the state's newest pair after its last ``memory − 1`` stored ones: (base, s, m,
    P, Q) with the m pairs in base[:, s:s+m] and P, Q their views. Where the state is the one the last step of this
    path made (its P carries the window it was cut from, and p, q are the buffer's next slots, reserved for them),
    the result is read from that record without inspecting the views; otherwise append_pair decides."""
    P, Q, p, q = state.P, state.Q, state.p, state.q
    rec = getattr(P, "_lsr1_window", None)
    if rec is not None and rec[2] is Q and rec[3] is p and rec[4] is q:
        s, m_old = rec[0], rec[1]
        base = P._base
        j = s + m_old
        if base._lsr1_hwm == j and j + 1 < base.shape[1] and getattr(base, "_lsr1_reserved", -1) == j:
            base._lsr1_hwm = j + 1  # (append_pair's bookkeeping where the pair is in its slot already)
            keep = min(max(memory - 1, 0), m_old)
            s, m = j - keep, keep + 1
            return base, s, m, base[:, s:s + m, 0], base[:, s:s + m, 1]
    old = max(memory - 1, 0)
    P, Q = (t if t.shape[1] <= old else t[:, t.shape[1] - old:] for t in (P, Q))
    base, s, m, _ = compact.append_pair(P, Q, p, q, None, memory)
    return base, s, m, base[:, s:s + m, 0], base[:, s:s + m, 1]


def _stats(base: torch.Tensor, s: int, m: int):
    """:func:`pair_stats` of base[:, s:s+m] for one row, as a list of (pᵀq, pᵀp, qᵀq) float64 numbers, or None where
    one of them is not finite. The buffer keeps them (slots are written once) beside pair_stats' tensor, which is
    filled from them where a batched step reads it (:func:`compact.sync_stats`): a new pair costs its three
    products and three reads."""
    rows = getattr(base, "_lsr1_stats_one", None)
    j = s + m - 1
    if rows is not None and len(rows) >= j and getattr(base, "_lsr1_pairstats_upto", -1) == j:
        p, q = base[:, j, 0], base[:, j, 1]  # (pair_stats' products, of the same views)
        del rows[j:]
        rows.append((row_dot(p, q).item(), row_dot(p, p).item(), row_dot(q, q).item()))
        base._lsr1_pairstats_upto = s + m
        if getattr(base, "_lsr1_stats_dirty", None) is None:
            base._lsr1_stats_dirty = j  # (the first slot pair_stats' tensor lacks)
    else:
        st = pair_stats(base, s, m).tolist()[0]
        rows = [(0.0, 0.0, 0.0)] * s + [tuple(r) for r in st]
        base._lsr1_stats_one = rows
    out = rows[s:s + m]
    for r in out:
        if not (math.isfinite(r[0]) and math.isfinite(r[1]) and math.isfinite(r[2])):
            return None
    return out


def _row_views(base: torch.Tensor):
    """The pair buffer's slots as lists of (N,) views of its one row (p's, q's), made once per buffer."""
    views = getattr(base, "_lsr1_row_views", None)
    if views is None:
        views = (base[0, :, 0].unbind(0), base[0, :, 1].unbind(0))
        base._lsr1_row_views = views
    return views


_CPU = torch.device("cpu")
_FLAGS = (torch.tensor([False]), torch.tensor([True]))  # shared (1,) marks: a StepOut's flags are read, never written
def _const(dtype: torch.dtype, value: float, *shape: int) -> torch.Tensor:
    """A CPU tensor of ``shape`` holding ``value`` everywhere (the step's zero fields and unit step sizes): shared
    (:func:`compact.shared_const`) only where it has more than one element — an expanded tensor refuses in-place
    writes then, so nothing can change it — and made new where it has one."""
    if math.prod(shape) <= 1:
        return torch.full(shape, value, dtype=dtype)
    t = compact.shared_const(value, shape, dtype, _CPU)
    if value == 0:
        t._lsr1_zero = True  # (compact.is_zero reads this: the element cannot change, see above)
    return t


def _flag(v: bool) -> torch.Tensor:
    return _FLAGS[bool(v)]



__all__ = ["applies", "bfgs_step_one"]
