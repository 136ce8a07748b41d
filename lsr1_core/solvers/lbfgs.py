"""L-BFGS on the batched interface: two-loop recursion, optional batched strong-Wolfe or exact line search."""
from __future__ import annotations

import torch

from ..errors import LSR1Error
from ..operators import LBFGSInverse
from .base import Solver, StepInfo


def cubic_minimizer(t1, f1, d1, t2, f2, d2, lo, hi):
    """Minimiser of the cubic through (t1, f1, f1') and (t2, f2, f2'), clamped to [lo, hi]; the
    midpoint where the cubic has no minimiser. All arguments are (B,) tensors."""
    denom = t1 - t2
    safe = denom.abs() > 1e-300
    denom = torch.where(safe, denom, torch.ones_like(denom))
    e1 = d1 + d2 - 3 * (f1 - f2) / denom
    e2sq = e1 * e1 - d1 * d2
    e2 = e2sq.clamp_min(0).sqrt()
    forward = t1 <= t2
    num_a, den_a = d2 + e2 - e1, d2 - d1 + 2 * e2
    num_b, den_b = d1 + e2 - e1, d1 - d2 + 2 * e2
    den_a = torch.where(den_a.abs() > 1e-300, den_a, torch.full_like(den_a, 1e-300))
    den_b = torch.where(den_b.abs() > 1e-300, den_b, torch.full_like(den_b, 1e-300))
    t_a = t2 - (t2 - t1) * (num_a / den_a)
    t_b = t1 - (t1 - t2) * (num_b / den_b)
    t = torch.where(forward, t_a, t_b)
    mid = 0.5 * (lo + hi)
    ok = (e2sq >= 0) & safe & torch.isfinite(t)
    t = torch.where(ok, t, mid)
    return torch.minimum(torch.maximum(t, lo), hi)


def strong_wolfe(objective, x, d, f0, g0, t0, c1=1e-4, c2=0.9, max_evals=25, tol_change=1e-9):
    """Batched strong-Wolfe line search along x − t·d (Nocedal & Wright, Alg. 3.5/3.6, cubic interpolation).

    Each row runs its own bracketing/zoom; the objective is evaluated on the whole batch at the rows'
    trial steps. Returns (t, f(x − t d), g(x − t d), evaluations, satisfied mask).
    """
    B = x.shape[0]
    dphi0 = -(g0 * d).sum(-1)  # φ'(0) < 0 for a descent direction
    t = t0.clone()
    t_prev = torch.zeros_like(t)
    f_prev, dphi_prev = f0.clone(), dphi0.clone()
    zoom = torch.zeros(B, dtype=torch.bool, device=x.device)
    done = torch.zeros_like(zoom)
    lo_t, lo_f, lo_d = torch.zeros_like(t), f0.clone(), dphi0.clone()
    hi_t, hi_f, hi_d = torch.zeros_like(t), f0.clone(), dphi0.clone()
    lo_g = g0.clone()
    t_acc, f_acc, g_acc = torch.zeros_like(t), f0.clone(), g0.clone()
    evals = 0
    for it in range(max_evals):
        f_t, g_t = objective.value_and_grad(x - t.unsqueeze(-1) * d)
        f_t, g_t = f_t.detach(), g_t.detach()
        evals += 1
        dphi = -(g_t * d).sum(-1)
        active = ~done
        armijo_fail = (f_t > f0 + c1 * t * dphi0) | ~torch.isfinite(f_t)
        curv_ok = dphi.abs() <= -c2 * dphi0
        # --- bracketing rows ----------------------------------------------------
        br = active & ~zoom
        to_zoom_a = br & (armijo_fail | ((f_t >= f_prev) & (it > 0)))
        accept_b = br & ~to_zoom_a & curv_ok
        to_zoom_b = br & ~to_zoom_a & ~accept_b & (dphi >= 0)
        extend = br & ~to_zoom_a & ~accept_b & ~to_zoom_b
        # --- zoom rows ----------------------------------------------------------
        zm = active & zoom
        shrink_hi = zm & (armijo_fail | (f_t >= lo_f))
        accept_z = zm & ~shrink_hi & curv_ok
        move_lo = zm & ~shrink_hi & ~accept_z
        flip = move_lo & (dphi * (hi_t - lo_t) >= 0)
        # acceptances
        acc = accept_b | accept_z
        t_acc = torch.where(acc, t, t_acc)
        f_acc = torch.where(acc, f_t, f_acc)
        g_acc = torch.where(acc.unsqueeze(-1), g_t, g_acc)
        done = done | acc
        # bracket updates for new zoom rows: (lo, hi) = (prev, t) or (t, prev)
        lo_t = torch.where(to_zoom_a, t_prev, torch.where(to_zoom_b, t, lo_t))
        lo_f = torch.where(to_zoom_a, f_prev, torch.where(to_zoom_b, f_t, lo_f))
        lo_d = torch.where(to_zoom_a, dphi_prev, torch.where(to_zoom_b, dphi, lo_d))
        lo_g = torch.where(to_zoom_b.unsqueeze(-1), g_t, lo_g)
        hi_t = torch.where(to_zoom_a, t, torch.where(to_zoom_b, t_prev, hi_t))
        hi_f = torch.where(to_zoom_a, f_t, torch.where(to_zoom_b, f_prev, hi_f))
        hi_d = torch.where(to_zoom_a, dphi, torch.where(to_zoom_b, dphi_prev, hi_d))
        zoom = zoom | to_zoom_a | to_zoom_b
        # zoom updates
        hi_t = torch.where(shrink_hi, t, torch.where(flip, lo_t, hi_t))
        hi_f = torch.where(shrink_hi, f_t, torch.where(flip, lo_f, hi_f))
        hi_d = torch.where(shrink_hi, dphi, torch.where(flip, lo_d, hi_d))
        lo_t = torch.where(move_lo, t, lo_t)
        lo_f = torch.where(move_lo, f_t, lo_f)
        lo_d = torch.where(move_lo, dphi, lo_d)
        lo_g = torch.where(move_lo.unsqueeze(-1), g_t, lo_g)
        # bracket too small → accept the low end
        tiny = zoom & ~done & ((hi_t - lo_t).abs() * d.abs().amax(-1) < tol_change)
        t_acc = torch.where(tiny, lo_t, t_acc)
        f_acc = torch.where(tiny, lo_f, f_acc)
        g_acc = torch.where(tiny.unsqueeze(-1), lo_g, g_acc)
        done = done | tiny
        if bool(done.all()):
            break
        # next trial steps
        lo_b = torch.minimum(lo_t, hi_t)
        hi_b = torch.maximum(lo_t, hi_t)
        width = hi_b - lo_b
        t_zoom = cubic_minimizer(lo_t, lo_f, lo_d, hi_t, hi_f, hi_d, lo_b + 0.1 * width, hi_b - 0.1 * width)
        t_ext = cubic_minimizer(t_prev, f_prev, dphi_prev, t, f_t, dphi, t + 0.01 * (t - t_prev), 10 * t)
        t_ext = torch.where(torch.isfinite(t_ext), t_ext, 2 * t)
        t_prev = torch.where(extend, t, t_prev)
        f_prev = torch.where(extend, f_t, f_prev)
        dphi_prev = torch.where(extend, dphi, dphi_prev)
        t = torch.where(extend, t_ext, torch.where(zoom, t_zoom, t))
    # rows that never satisfied the conditions: take the bracket's low end (sufficient decrease) or no step
    left = ~done
    t_acc = torch.where(left, lo_t, t_acc)
    f_acc = torch.where(left, lo_f, f_acc)
    g_acc = torch.where(left.unsqueeze(-1), lo_g, g_acc)
    return t_acc, f_acc, g_acc, evals, done


class LBFGS(Solver):
    """Limited-memory BFGS.

    history: number of (s, y) pairs kept; lr: step size (initial trial step with a line search);
    line_search: None (fixed step lr, like ``torch.optim.LBFGS`` without line search), ``"strong_wolfe"``
    (batched, c1 = 1e-4, c2 = 0.9) or ``"exact"`` (exact minimisation along d for quadratics, via hvp).
    As in ``torch.optim.LBFGS`` the first step is scaled by min(1, 1/‖g‖₁). Pairs with sᵀy ≤ 1e-10 are
    skipped; H0 = γI with γ = sᵀy / yᵀy of the newest pair.
    """

    name = "lbfgs"

    def __init__(self, history: int = 8, lr: float = 1.0, line_search: str | None = None, max_evals: int = 25):
        if not isinstance(history, int) or history < 1:
            raise LSR1Error(f"history (memory) must be a positive integer, got {history!r}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise LSR1Error(f"lr must be a positive number, got {lr!r}")
        if line_search not in (None, "strong_wolfe", "exact"):
            raise LSR1Error(f"line_search must be None, 'strong_wolfe' or 'exact', got {line_search!r}")
        self.history, self.lr, self.line_search, self.max_evals = history, float(lr), line_search, max_evals

    def _init(self, objective):
        x = self.state["x"]
        B, N = x.shape
        self.state["S"] = x.new_zeros(B, 0, N)
        self.state["Y"] = x.new_zeros(B, 0, N)
        self.state["valid"] = torch.zeros(B, 0, dtype=torch.bool, device=x.device)
        self.state["gamma"] = x.new_ones(B, 1)

    def operator(self) -> LBFGSInverse:
        st = self.state
        return LBFGSInverse(st["S"], st["Y"], st["valid"], st["gamma"])

    def _step(self, objective):
        st = self.state
        x, f, g = st["x"], st["f"], st["g"]
        op = self.operator()
        d = op.matvec(g)
        # a non-descent direction (can only come from round-off) falls back to the gradient
        bad = (g * d).sum(-1) <= 0
        d = torch.where(bad.unsqueeze(-1), g, d)
        if st["k"] == 0:
            t = self.lr * torch.clamp(1.0 / g.abs().sum(-1).clamp_min(1e-300), max=1.0)
        else:
            t = torch.full_like(f, self.lr)
        evals = 1
        if self.line_search == "strong_wolfe":
            t, f_new, g_new, evals, _ = strong_wolfe(objective, x, d, f, g, t, max_evals=self.max_evals)
            x_new = x - t.unsqueeze(-1) * d
        elif self.line_search == "exact":
            Hd = objective.hvp(x, d)
            curv = (d * Hd).sum(-1)
            t = torch.where(curv > 0, (g * d).sum(-1) / curv.clamp_min(1e-300), t)
            x_new = x - t.unsqueeze(-1) * d
            f_new, g_new = objective.value_and_grad(x_new)
        else:
            x_new = x - t.unsqueeze(-1) * d
            f_new, g_new = objective.value_and_grad(x_new)
        s = x_new - x
        y = g_new - g
        sy = (s * y).sum(-1)
        accept = sy > 1e-10
        S = torch.cat([st["S"], s.unsqueeze(1)], 1)
        Y = torch.cat([st["Y"], y.unsqueeze(1)], 1)
        V = torch.cat([st["valid"], accept.unsqueeze(1)], 1)
        # rows that skip the pair keep their old history: mark the new slot invalid for them
        # and compact so that each row's newest valid pairs are kept
        if S.shape[1] > self.history:
            # drop the oldest slot only for rows whose history is full of valid pairs
            S, Y, V = _compact(S, Y, V, self.history)
        st["S"], st["Y"], st["valid"] = S, Y, V
        yy = (y * y).sum(-1)
        st["gamma"] = torch.where(accept, sy / yy.clamp_min(1e-300), st["gamma"].squeeze(-1)).unsqueeze(-1)
        st.update(x=x_new.detach(), f=f_new.detach(), g=g_new.detach())
        return StepInfo(direction=d, step_size=t.unsqueeze(-1), operator=op, evals=evals)


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
