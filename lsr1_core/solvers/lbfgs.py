"""L-BFGS on the batched interface: two-loop recursion, optional batched strong-Wolfe or exact line search.

    solver = LBFGS(memory=8, lr=1.0, line_search="strong_wolfe")

Conventions follow ``torch.optim.LBFGS`` so that a single problem (B = 1) gives the same iterates:

* H0 = γI with γ = sᵀy / yᵀy of the newest accepted pair (γ = 1 before the first one);
* a pair is stored only if sᵀy > 1e-10 (curvature condition); the oldest pair is dropped when full;
* the first step's trial length is lr · min(1, 1/‖g‖₁) (``first_step="torch"``), later ones lr;
* the strong-Wolfe search is a batched port of torch's ``_strong_wolfe`` (bracketing with cubic
  extrapolation, then zoom with cubic interpolation and the "insufficient progress" safeguard),
  c1 = 1e-4, c2 = 0.9, at most 25 evaluations. Every row has its own step length; each evaluation is
  one call of ``objective.value_and_grad`` on the whole batch.

Sign convention: the direction ``d`` is such that x_new = x − t·d, so torch's direction is −d and
torch's directional derivative gᵀd_torch is our −gᵀd.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import LSR1Error, check_memory
from ..operators import LBFGSInverse
from ..rowops import NP_SCALAR, row_dot, row_max_abs
from .base import Solver, StepInfo

CURVATURE_EPS = 1e-10  # pairs with sᵀy ≤ this are skipped (torch.optim.LBFGS uses the same threshold)


def cubic_interpolate(x1, f1, g1, x2, f2, g2, lo=None, hi=None):
    """Batched port of torch.optim.lbfgs._cubic_interpolate.

    Minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2) (values and slopes), clamped to
    [lo, hi] (default: the interval between x1 and x2); the midpoint of [lo, hi] where the cubic has
    no real minimiser (or the formula breaks down). All arguments are (B,) tensors.
    """
    if lo is None:
        lo, hi = torch.minimum(x1, x2), torch.maximum(x1, x2)
    dx = x1 - x2
    dx = torch.where(dx == 0, torch.full_like(dx, 1e-300), dx)
    d1 = g1 + g2 - 3 * (f1 - f2) / dx
    d2sq = d1 * d1 - g1 * g2
    d2 = d2sq.clamp_min(0).sqrt()
    fwd = x1 <= x2
    pos_a = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    pos_b = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    pos = torch.where(fwd, pos_a, pos_b)
    mid = 0.5 * (lo + hi)
    ok = (d2sq >= 0) & torch.isfinite(pos)
    return torch.where(ok, torch.minimum(torch.maximum(pos, lo), hi), mid)


def strong_wolfe(objective, x, d, f0, g0, t0, c1: float = 1e-4, c2: float = 0.9, max_evals: int = 25,
                 tol_change=1e-9, first: list | None = None):
    """Batched strong-Wolfe line search along x − t·d, one independent search per row.

    A row-by-row port of torch.optim.lbfgs._strong_wolfe (itself from Torch7's lswolfe.lua), with
    ``max_evals`` playing the part of ``max_ls + 1``. Rows advance in lock step: each iteration
    evaluates the objective on the whole batch at every row's own trial step; finished rows are masked.

    Returns ``(t, f, g, evals, ok)``: per row the accepted step (B,), f and g there, the number of
    batched evaluations used, and whether the strong-Wolfe conditions were satisfied (rows that ran out
    of evaluations or whose bracket became tiny return the bracket's best point, as torch does).
    ``tol_change`` is a number, a (B,) tensor or a function giving one (called only where a zoom needs it);
    ``first``, a list, receives (f, g) of the first trial x − t0·d.
    """
    if max_evals < 1:
        raise LSR1Error(f"max_evals must be at least 1, got {max_evals!r}")
    if ONE_ROW and x.shape[0] == 1 and x.dtype in NP_SCALAR and f0.dtype == x.dtype:
        return _strong_wolfe_one(objective, x, d, f0, g0, t0, c1, c2, max_evals, tol_change, first)
    if callable(tol_change):
        tol_change = tol_change()
    max_ls = max_evals - 1
    B = x.shape[0]
    dev = x.device
    gtd0 = -row_dot(g0, d)  # torch's gtd: the slope of φ(t) = f(x − t d) at 0 (negative for descent)
    d_norm = row_max_abs(d)
    t = t0.clone().to(f0)
    # bracketing state
    t_prev, f_prev, g_prev, gtd_prev = torch.zeros_like(t), f0.clone(), g0.clone(), gtd0.clone()
    # bracket [a, b] (positional, as torch's bracket[0], bracket[1]) with values, gradients, slopes
    a_t, a_f, a_g, a_gtd = torch.zeros_like(t), f0.clone(), g0.clone(), gtd0.clone()
    b_t, b_f, b_g, b_gtd = torch.zeros_like(t), f0.clone(), g0.clone(), gtd0.clone()
    low_a = torch.ones(B, dtype=torch.bool, device=dev)  # low_pos == 0
    insuf = torch.zeros(B, dtype=torch.bool, device=dev)
    zoom = torch.zeros(B, dtype=torch.bool, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)  # finished (result stored)
    ok = torch.zeros(B, dtype=torch.bool, device=dev)  # strong-Wolfe satisfied
    t_res, f_res, g_res = torch.zeros_like(t), f0.clone(), g0.clone()
    ls_iter = 0
    evals = 0

    def wsel(m, new, old):
        # (the same values as torch.where; where every row or none is selected — a batch of one, always — no copy
        # of a whole gradient is made: nothing here writes into these tensors in place)
        if bool(m.all()):
            return new
        if not bool(m.any()):
            return old
        return torch.where(m.unsqueeze(-1) if new.dim() == 2 else m, new, old)

    def finish_low(m):
        nonlocal t_res, f_res, g_res, done
        t_res = torch.where(m, torch.where(low_a, a_t, b_t), t_res)
        f_res = torch.where(m, torch.where(low_a, a_f, b_f), f_res)
        g_res = wsel(m, wsel(low_a, a_g, b_g), g_res)
        done = done | m

    while True:
        f_new, g_new = objective.value_and_grad(x - t.unsqueeze(-1) * d)
        f_new, g_new = f_new.detach(), g_new.detach()
        if evals == 0 and first is not None:
            first.append((f_new, g_new))
        evals += 1
        gtd_new = -row_dot(g_new, d)
        active = ~done
        armijo_fail = ~(f_new <= f0 + c1 * t * gtd0)  # NaN counts as failure
        curv = gtd_new.abs() <= -c2 * gtd0

        # ---- bracketing phase -------------------------------------------------------------
        br = active & ~zoom
        if ls_iter >= max_ls:  # ran out in bracketing: bracket = [0, t]
            a_t, a_f, a_g = wsel(br, torch.zeros_like(t), a_t), wsel(br, f0, a_f), wsel(br, g0, a_g)
            b_t, b_f, b_g = wsel(br, t, b_t), wsel(br, f_new, b_f), wsel(br, g_new, b_g)
            low_a = torch.where(br, ~(a_f > b_f), low_a)
            finish_low(br)
            br_extend = torch.zeros_like(br)
        else:
            cond_a = br & (armijo_fail | ((ls_iter > 1) & (f_new >= f_prev)))
            cond_w = br & ~cond_a & curv
            cond_b = br & ~cond_a & ~cond_w & (gtd_new >= 0)
            new_br = cond_a | cond_b
            a_t, a_f, a_g, a_gtd = (wsel(new_br, t_prev, a_t), wsel(new_br, f_prev, a_f),
                                    wsel(new_br, g_prev, a_g), wsel(new_br, gtd_prev, a_gtd))
            b_t, b_f, b_g, b_gtd = (wsel(new_br, t, b_t), wsel(new_br, f_new, b_f),
                                    wsel(new_br, g_new, b_g), wsel(new_br, gtd_new, b_gtd))
            low_a = torch.where(new_br, ~(a_f > b_f), low_a)
            zoom = zoom | new_br
            # Wolfe satisfied while bracketing: accept t
            t_res, f_res, g_res = wsel(cond_w, t, t_res), wsel(cond_w, f_new, f_res), wsel(cond_w, g_new, g_res)
            ok = ok | cond_w
            done = done | cond_w
            br_extend = br & ~new_br & ~cond_w

        # ---- zoom phase (rows that were already zooming when t was evaluated) ----------------
        zm = active & zoom & ~(br & zoom)  # exclude rows that just entered the zoom
        hi_t, hi_f = torch.where(low_a, b_t, a_t), torch.where(low_a, b_f, a_f)
        lo_t, lo_f = torch.where(low_a, a_t, b_t), torch.where(low_a, a_f, b_f)
        repl_hi = zm & (armijo_fail | (f_new >= lo_f))
        wolfe = zm & ~repl_hi & curv
        flip = zm & ~repl_hi & ~wolfe & (gtd_new * (hi_t - lo_t) >= 0)
        repl_lo = zm & ~repl_hi
        # old high becomes new low's value (only for flip rows): write low into the high slot
        hi_is_a = ~low_a
        into_a_from_low = flip & hi_is_a
        into_b_from_low = flip & ~hi_is_a
        a_t, a_f, a_g, a_gtd = (wsel(into_a_from_low, b_t, a_t), wsel(into_a_from_low, b_f, a_f),
                                wsel(into_a_from_low, b_g, a_g), wsel(into_a_from_low, b_gtd, a_gtd))
        b_t, b_f, b_g, b_gtd = (wsel(into_b_from_low, a_t, b_t), wsel(into_b_from_low, a_f, b_f),
                                wsel(into_b_from_low, a_g, b_g), wsel(into_b_from_low, a_gtd, b_gtd))
        # the new point replaces the high end (repl_hi) or the low end (repl_lo)
        to_a = (repl_hi & hi_is_a) | (repl_lo & low_a)
        to_b = (repl_hi & ~hi_is_a) | (repl_lo & ~low_a)
        a_t, a_f = wsel(to_a, t, a_t), wsel(to_a, f_new, a_f)
        a_g, a_gtd = wsel(to_a, g_new, a_g), wsel(to_a, gtd_new, a_gtd)
        b_t, b_f = wsel(to_b, t, b_t), wsel(to_b, f_new, b_f)
        b_g, b_gtd = wsel(to_b, g_new, b_g), wsel(to_b, gtd_new, b_gtd)
        low_a = torch.where(repl_hi, ~(a_f > b_f), low_a)
        ok = ok | wolfe
        finish_low(wolfe)
        ls_iter_next = ls_iter + 1  # the count after the next evaluation

        # ---- next trial steps ---------------------------------------------------------------
        zoom_rows = ~done & zoom
        if ls_iter >= max_ls:
            finish_low(zoom_rows)
            zoom_rows = torch.zeros_like(zoom_rows)
        tiny = zoom_rows & ((b_t - a_t).abs() * d_norm < tol_change)
        finish_low(tiny)
        zoom_rows = zoom_rows & ~tiny
        if bool(done.all()):
            break
        # bracketing rows: cubic extrapolation in [t + 0.01 (t − t_prev), 10 t]
        t_ext = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, t + 0.01 * (t - t_prev), 10 * t)
        t_prev = torch.where(br_extend, t, t_prev)
        f_prev = torch.where(br_extend, f_new, f_prev)
        g_prev = wsel(br_extend, g_new, g_prev)
        gtd_prev = torch.where(br_extend, gtd_new, gtd_prev)
        # zoom rows: cubic interpolation inside the bracket, kept 10% away from its ends when stuck
        t_z = cubic_interpolate(a_t, a_f, a_gtd, b_t, b_f, b_gtd)
        bmin, bmax = torch.minimum(a_t, b_t), torch.maximum(a_t, b_t)
        eps = 0.1 * (bmax - bmin)
        near = torch.minimum(bmax - t_z, t_z - bmin) < eps
        move = near & (insuf | (t_z >= bmax) | (t_z <= bmin))
        t_moved = torch.where((t_z - bmax).abs() < (t_z - bmin).abs(), bmax - eps, bmin + eps)
        t_z_final = torch.where(move, t_moved, t_z)
        insuf = torch.where(zoom_rows, near & ~move, insuf)
        t = torch.where(br_extend, t_ext, torch.where(zoom_rows, t_z_final, t))
        ls_iter = ls_iter_next
    return t_res, f_res, g_res, evals, ok


# ---- one row: the same search with its bookkeeping in scalars ---------------------------------------------------
# strong_wolfe runs a batch of one through _strong_wolfe_one, and the qn form's two-loop recursion one row on the CPU
# with Python scalars (False: the batched code for both; tests and the optimizer_cost benchmark's ablation)
ONE_ROW = True
_TORCH_OF = {np.float32: torch.float32, np.float64: torch.float64}


def _cubic_one(x1, f1, g1, x2, f2, g2, lo=None, hi=None):
    """:func:`cubic_interpolate` on scalars of one numpy float type (the same operations, so the same rounding)."""
    if lo is None:
        lo, hi = min(x1, x2), max(x1, x2)
    dx = x1 - x2
    if dx == 0:
        dx = type(dx)(1e-300)
    d1 = g1 + g2 - 3 * (f1 - f2) / dx
    d2sq = d1 * d1 - g1 * g2
    # (torch's sqrt, which is not always correctly rounded on CPU, so that both paths round alike)
    d2 = type(d2sq)(torch.tensor(max(d2sq, type(d2sq)(0)), dtype=_TORCH_OF[type(d2sq)]).sqrt().item())
    if x1 <= x2:
        pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    if d2sq >= 0 and np.isfinite(pos):
        return min(max(pos, lo), hi)
    return 0.5 * (lo + hi)


def _strong_wolfe_one(objective, x, d, f0, g0, t0, c1, c2, max_evals, tol_change, first=None, last=None, gd0=None):
    """:func:`strong_wolfe` for a batch of one row: the batched code's decisions, step for step, with its
    bookkeeping (steps, values, slopes, flags) held in numpy scalars of x's dtype — the same arithmetic, so the same
    iterates — instead of one-element tensors. At N = 10³ the batched code spends about 0.4 ms of tensor calls per
    trial on a single row (its masks, its ``where``s); this path keeps the per-trial tensor work to the evaluation
    and one dot product. Returns what :func:`strong_wolfe` returns. ``last``, a list, is set to [t, x − t·d] of each
    evaluation (so a caller can reuse the accepted trial point instead of forming it again). ``gd0``: gᵀd at x where
    the caller has it (row_dot(g0, d) as a number), so it is not computed again."""
    F = NP_SCALAR[x.dtype]
    c1, c2 = F(c1), F(c2)
    zero = F(0)
    max_ls = max_evals - 1

    def scal(v):  # a (1,) tensor (or a number) as a scalar of x's dtype
        return F(v.item() if isinstance(v, torch.Tensor) else v)

    fz = scal(f0)
    gtd0 = -scal(row_dot(g0, d) if gd0 is None else gd0)
    tiny_bracket = None  # max|d| and the tolerance, computed where a zoom first needs them

    def tiny(width):
        nonlocal tiny_bracket
        if tiny_bracket is None:
            tiny_bracket = (scal(row_max_abs(d)), scal(tol_change() if callable(tol_change) else tol_change))
        return width * tiny_bracket[0] < tiny_bracket[1]

    t = scal(t0)
    t_prev, f_prev, g_prev, gtd_prev = zero, fz, g0, gtd0
    a = [zero, fz, g0, gtd0]  # the bracket's ends [t, f, g, slope] (torch's bracket[0], bracket[1])
    b = [zero, fz, g0, gtd0]
    low_a, insuf, zoom, ok = True, False, False, False
    ls_iter = evals = 0
    with np.errstate(all="ignore"):
        while True:
            x_t = x - float(t) * d
            f_t, g_new = objective.value_and_grad(x_t)
            if last is not None:
                last[:] = (float(t), x_t)
            f_t, g_new = f_t.detach(), g_new.detach()
            if evals == 0 and first is not None:
                first.append((f_t, g_new))
            evals += 1
            f_new = scal(f_t)
            gtd_new = -scal(row_dot(g_new, d))
            armijo_fail = not (f_new <= fz + c1 * t * gtd0)  # NaN counts as failure
            curv = abs(gtd_new) <= -c2 * gtd0
            br_extend, res = False, None
            if not zoom:  # ---- bracketing
                if ls_iter >= max_ls:  # ran out in bracketing: bracket = [0, t]
                    a[:3], b[:3] = [zero, fz, g0], [t, f_new, g_new]
                    low_a = not (a[1] > b[1])
                    res = "low"
                elif armijo_fail or (ls_iter > 1 and f_new >= f_prev) or (not curv and gtd_new >= 0):
                    a, b = [t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new, gtd_new]
                    low_a, zoom = not (a[1] > b[1]), True
                elif curv:  # Wolfe satisfied while bracketing: accept t
                    res, ok = (t, f_new, g_new), True
                else:
                    br_extend = True
            else:  # ---- zoom
                lo, hi = (a, b) if low_a else (b, a)
                if armijo_fail or f_new >= lo[1]:  # the new point replaces the high end
                    hi[:] = [t, f_new, g_new, gtd_new]
                    low_a = not (a[1] > b[1])
                else:
                    if curv:
                        ok = True
                    elif gtd_new * (hi[0] - lo[0]) >= 0:
                        hi[:] = lo
                    lo[:] = [t, f_new, g_new, gtd_new]
                    if curv:
                        res = "low"
            if res is None and zoom and (ls_iter >= max_ls or tiny(abs(b[0] - a[0]))):
                res = "low"  # out of trials, or the bracket is tiny
            if res is not None:
                break
            if br_extend:  # cubic extrapolation in [t + 0.01 (t − t_prev), 10 t]
                t_ext = _cubic_one(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, t + F(0.01) * (t - t_prev), 10 * t)
                t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
                t = t_ext
            else:  # cubic interpolation inside the bracket, kept 10% away from its ends when stuck
                t_z = _cubic_one(a[0], a[1], a[3], b[0], b[1], b[3])
                bmin, bmax = min(a[0], b[0]), max(a[0], b[0])
                eps = F(0.1) * (bmax - bmin)
                near = min(bmax - t_z, t_z - bmin) < eps
                move = near and (insuf or t_z >= bmax or t_z <= bmin)
                if move:
                    t_z = bmax - eps if abs(t_z - bmax) < abs(t_z - bmin) else bmin + eps
                insuf = near and not move
                t = t_z
            ls_iter += 1
    if res == "low":
        res = tuple(a[:3]) if low_a else tuple(b[:3])
    t_r, f_r, g_r = res
    like = f0.reshape(1)
    return (like.new_full((1,), float(t_r)), like.new_full((1,), float(f_r)), g_r, evals,
            torch.tensor([ok], device=x.device))


class LBFGS(Solver):
    """Limited-memory BFGS.

    Args:
        memory: number of (s, y) pairs kept (m ≥ 1); ``history=`` is its deprecated old name.
        lr: step size without a line search; the initial trial step with one.
        line_search: None (fixed step, like ``torch.optim.LBFGS(line_search_fn=None)``),
            ``"strong_wolfe"`` (batched, see :func:`strong_wolfe`) or ``"exact"`` (exact minimisation
            along d for quadratics: t = gᵀd / dᵀHd with dᵀHd from ``objective.hvp``; rows with
            dᵀHd ≤ 0 fall back to the trial step).
        first_step: ``"torch"`` (first trial step lr·min(1, 1/‖g‖₁), as torch.optim.LBFGS) or ``"lr"``.
        max_evals: evaluation budget of the strong-Wolfe search per step (25 as torch's default max_ls).
        c1, c2: the Wolfe constants; tolerance_change: the search stops when the bracket is shorter
            than this (in units of max|d|), as torch's.

    The operator reported in StepInfo is the :class:`~lsr1_core.operators.LBFGSInverse` that produced
    the direction. extras: ``pair_accepted`` (1 where the step's pair passed sᵀy > 1e-10) and, with the
    strong-Wolfe search, ``wolfe`` (1 where the accepted step satisfies both conditions).
    """

    name = "lbfgs"

    def __init__(self, memory: int = 8, lr: float = 1.0, line_search: str | None = None, max_evals: int = 25,
                 first_step: str = "torch", c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9,
                 history: int | None = None):
        if history is not None:
            warnings.warn("LBFGS(history=...) is deprecated; the buffer size is memory= for every solver",
                          DeprecationWarning, stacklevel=2)
            memory = history
        check_memory(memory)
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise LSR1Error(f"lr must be a positive finite number, got {lr!r}")
        if line_search not in (None, "strong_wolfe", "exact"):
            raise LSR1Error(f"line_search must be None, 'strong_wolfe' or 'exact', got {line_search!r}")
        if first_step not in ("torch", "lr"):
            raise LSR1Error(f"first_step must be 'torch' or 'lr', got {first_step!r}")
        if not isinstance(max_evals, int) or max_evals < 1:
            raise LSR1Error(f"max_evals must be a positive integer, got {max_evals!r}")
        if not 0 < c1 < c2 < 1:
            raise LSR1Error(f"the Wolfe constants must satisfy 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
        if not tolerance_change >= 0:
            raise LSR1Error(f"tolerance_change must be non-negative, got {tolerance_change!r}")
        self.memory, self.lr, self.line_search, self.max_evals = memory, float(lr), line_search, max_evals
        self.first_step, self.c1, self.c2, self.tolerance_change = first_step, c1, c2, tolerance_change

    def _init(self, objective):
        x = self.state["x"]
        B, N = x.shape
        self.state["S"] = x.new_zeros(B, 0, N)
        self.state["Y"] = x.new_zeros(B, 0, N)
        self.state["valid"] = torch.zeros(B, 0, dtype=torch.bool, device=x.device)
        self.state["gamma"] = x.new_ones(B, 1)

    def operator(self) -> LBFGSInverse:
        """The current inverse-Hessian approximation (two-loop recursion)."""
        st = self.state
        return LBFGSInverse(st["S"], st["Y"], st["valid"], st["gamma"])

    def _step(self, objective):
        st = self.state
        x, f, g = st["x"], st["f"], st["g"]
        op = self.operator()
        d = op.matvec(g)
        # a non-descent direction (only possible through round-off: H is positive definite) → gradient
        bad = ~((g * d).sum(-1) > 0)
        d = torch.where(bad.unsqueeze(-1), g, d)
        if st["k"] == 0 and self.first_step == "torch":
            t = self.lr * torch.clamp(1.0 / g.abs().sum(-1), max=1.0)
        else:
            t = torch.full_like(f, self.lr)
        evals = 1
        extras = {}
        if self.line_search == "strong_wolfe":
            t, f_new, g_new, evals, wolfe = strong_wolfe(objective, x, d, f, g, t, c1=self.c1, c2=self.c2,
                                                         max_evals=self.max_evals, tol_change=self.tolerance_change)
            x_new = x - t.unsqueeze(-1) * d
            extras["wolfe"] = wolfe.to(x.dtype)
        elif self.line_search == "exact":
            Hd = objective.hvp(x, d)
            curv = (d * Hd).sum(-1)
            t = torch.where(curv > 0, (g * d).sum(-1) / torch.where(curv > 0, curv, torch.ones_like(curv)), t)
            x_new = x - t.unsqueeze(-1) * d
            f_new, g_new = objective.value_and_grad(x_new)
        else:
            x_new = x - t.unsqueeze(-1) * d
            f_new, g_new = objective.value_and_grad(x_new)
        f_new, g_new = f_new.detach(), g_new.detach()
        s = x_new - x
        y = g_new - g
        sy = (s * y).sum(-1)
        accept = sy > CURVATURE_EPS
        extras["pair_accepted"] = accept.to(x.dtype)
        S = torch.cat([st["S"], s.unsqueeze(1)], 1)
        Y = torch.cat([st["Y"], y.unsqueeze(1)], 1)
        V = torch.cat([st["valid"], accept.unsqueeze(1)], 1)
        if S.shape[1] > self.memory:
            S, Y, V = _compact(S, Y, V, self.memory)
        st["S"], st["Y"], st["valid"] = S, Y, V
        yy = (y * y).sum(-1)
        st["gamma"] = torch.where(accept, sy / torch.where(accept, yy, torch.ones_like(yy)),
                                  st["gamma"].squeeze(-1)).unsqueeze(-1)
        st.update(x=x_new.detach(), f=f_new, g=g_new)
        return StepInfo(direction=d, step_size=t.unsqueeze(-1), operator=op, extras=extras, evals=evals)


def _compact(S, Y, V, m):
    """Keep, per row, the newest ``m`` valid pairs (ordered oldest first; invalid slots padded in front)."""
    B, L, N = S.shape
    # sort key: invalid slots first, then by age (older first)
    order = torch.arange(L, device=S.device).expand(B, L) + V.long() * L
    idx = torch.argsort(order, dim=1)[:, -m:]
    S = torch.gather(S, 1, idx.unsqueeze(-1).expand(B, m, N))
    Y = torch.gather(Y, 1, idx.unsqueeze(-1).expand(B, m, N))
    V = torch.gather(V, 1, idx)
    return S, Y, V
