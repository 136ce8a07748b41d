"""Classical symmetric-rank-one quasi-Newton (limited memory), in the paper's inverse form p = B q.

B_k = B_{k−1} + w wᵀ / (wᵀq),  w = p − B_{k−1} q,

where B approximates the INVERSE Hessian, p = x_{k+1} − x_k and q = g_{k+1} − g_k (so B q = p is the
secant equation). The limited-memory operator is rebuilt every step from the stored pairs (oldest
first) starting at B_0 = γI: it is ``LowRank(W, c, γ)`` with the recursive w_i and c_i = 1/(w_iᵀq_i).
An update is skipped (c_i = 0) when |qᵀw| ≤ r‖q‖‖w‖ (r = 1e-8), the standard safeguard (≤ so that
w = 0, a pair H already satisfies, is skipped rather than divided by zero).

With the default ``init_scale="auto"`` (γ = pᵀq/qᵀq of the newest pair) a lone pair is always skipped:
w = p − γq is orthogonal to q by construction, so the second step is the Barzilai–Borwein step γg and
SR1 updates start from the second pair on.

The update satisfies the secant equation exactly but may make B indefinite, so d = B g can point
uphill — exactly what the explorer shows next to L-SR1's positive semi-definite construction.
"""
from __future__ import annotations

import torch

import math

from ..errors import LSR1Error, ShapeError, check_memory
from ..operators import LowRank
from ..rowops import row_max_abs, rows_finite
from .base import Solver, StepInfo


def sr1_update(B: torch.Tensor, p: torch.Tensor, q: torch.Tensor, r: float = 1e-8) -> torch.Tensor:
    """Dense batched SR1 update, for teaching: ``B + w wᵀ/(wᵀq)`` with ``w = p − B q``.

    ``B`` is (batch, N, N), ``p`` and ``q`` are (batch, N); rows where |wᵀq| < r‖q‖‖w‖ are returned
    unchanged (the skip rule). The result satisfies ``B_new q = p`` for every row that was updated.
    """
    if B.dim() != 3 or p.shape != q.shape or B.shape[:2] != p.shape or B.shape[1] != B.shape[2]:
        raise ShapeError(f"sr1_update expects B (batch, N, N) and p, q (batch, N); got {tuple(B.shape)}, "
                         f"{tuple(p.shape)}, {tuple(q.shape)}")
    w = p - torch.einsum("bij,bj->bi", B, q)
    wq = (w * q).sum(-1)
    skip = wq.abs() <= r * q.norm(dim=-1) * w.norm(dim=-1)
    coef = torch.where(skip, torch.zeros_like(wq), 1.0 / torch.where(skip, torch.ones_like(wq), wq))
    return B + coef.view(-1, 1, 1) * torch.einsum("bi,bj->bij", w, w)


def build_operator(P: torch.Tensor, Q: torch.Tensor, gamma: torch.Tensor, r: float = 1e-8) -> LowRank:
    """Apply the stored pairs (oldest first) to H0 = γI; skipped updates get coefficient 0."""
    B, L, N = P.shape
    Ws, cs = [], []
    for i in range(L):
        p, q = P[:, i], Q[:, i]
        Hq = gamma * q
        for w, c in zip(Ws, cs):
            Hq = Hq + (c * (w * q).sum(-1)).unsqueeze(-1) * w
        w = p - Hq
        wq = (w * q).sum(-1)
        skip = (wq.abs() <= r * q.norm(dim=-1) * w.norm(dim=-1)) | (q.norm(dim=-1) == 0)
        c = torch.where(skip, torch.zeros_like(wq), 1.0 / torch.where(skip, torch.ones_like(wq), wq))
        Ws.append(w)
        cs.append(c)
    if not Ws:
        return LowRank(P.new_zeros(B, 0, N), P.new_zeros(B, 0), gamma)
    return LowRank(torch.stack(Ws, 1), torch.stack(cs, 1), gamma)


ENVELOPE_FACTOR = 0.5


def safe_norm(t: torch.Tensor) -> torch.Tensor:
    """‖t‖ over the last dimension (keepdim), also where the plain norm overflows (entries beyond √(float max)):
    there max|t|·‖t/max|t|‖. Equal to ``t.norm`` wherever that is finite."""
    n = t.norm(dim=-1, keepdim=True)
    if not bool(torch.isinf(n).any()):
        return n
    over = torch.isinf(n) & rows_finite(t).unsqueeze(-1)
    if bool(over.any()):
        a = row_max_abs(t).unsqueeze(-1).clamp_min(torch.finfo(t.dtype).tiny)
        n = torch.where(over, a * (t / a).norm(dim=-1, keepdim=True), n)
    return n


def probe_scale(objective, x: torch.Tensor, g: torch.Tensor, rel: float = 1e-3):
    """A scale-free H₀ from one gradient difference along −g (one extra evaluation).

    p = −δ g/‖g‖ with δ = rel·‖x‖ (rel·1 at x = 0), q = ∇f(x + p) − g. Returns (p, q, γ) with the
    Barzilai–Borwein scale γ = pᵀq/qᵀq (B, 1), or ‖x‖/‖g‖ where the probe saw no positive curvature
    (p and q are then zeroed so that no update is built from them). Invariant to f → c·f and covariant
    with x → s·x (for x ≠ 0), like the rest of a quasi-Newton method.
    """
    tiny = torch.finfo(x.dtype).tiny
    with torch.no_grad():
        x, g = x.detach(), g.detach()
        xn = x.norm(dim=-1, keepdim=True)
        gn = safe_norm(g)
        length = torch.where(xn > 0, xn, torch.ones_like(xn))
        p = -rel * length * g / gn.clamp_min(tiny)
        _, g1 = objective.value_and_grad(x + p)
        q = g1 - g
        pq, qq = (p * q).sum(-1, keepdim=True), (q * q).sum(-1, keepdim=True)
        finite = rows_finite(q).unsqueeze(-1)
        big = torch.isinf(qq) & finite
        if bool(big.any()):  # |q| beyond √(float max): pᵀq/qᵀq as (pᵀq/a)/(qᵀq/a) with a = max|q|
            a = q.abs().amax(-1, keepdim=True).clamp_min(tiny)
            qs = q / a
            pq = torch.where(big, (p * qs).sum(-1, keepdim=True), pq)
            qq = torch.where(big, a * (qs * qs).sum(-1, keepdim=True), qq)
        usable = finite & (qq > 0) & (pq > 0)
        gamma = torch.where(usable, pq / qq.clamp_min(tiny), length / gn.clamp_min(tiny))
        gamma = torch.where(torch.isfinite(gamma) & (gamma > 0), gamma, torch.ones_like(gamma))
        p = torch.where(usable, p, torch.zeros_like(p))
        q = torch.where(usable, q, torch.zeros_like(q))
    return p, q, gamma


def envelope_scale(P: torch.Tensor, Q: torch.Tensor, gamma: torch.Tensor, factor: float,
                   newest: bool = False) -> torch.Tensor:
    """γ = factor·min pᵢᵀqᵢ/qᵢᵀqᵢ over the stored pairs (B, l, N) with positive curvature; the previous γ
    (B, 1) where no stored pair has any.

    On a convex quadratic each pᵀq/qᵀq is ≥ 1/λ_max, so the minimum approaches the largest inverse curvature
    from above, and with H₀ = γI ⪯ ∇²f⁻¹ every SR1 update is positive (rᵀq ≥ 0) — what keeps a positive
    semi-definite SR1 exact. Taking the minimum over the memory only (not all history) lets γ grow again on
    a non-convex function once a pair of extreme curvature has left the memory. factor = ½ measured best
    (docs/results_qn.md).

    ``newest=True``: factor·pᵀq/qᵀq of the newest pair with positive curvature instead of the minimum — the scale
    L-BFGS starts each step from (the qn form's ``h0="bb"``).
    """
    if P.shape[1] == 0:
        return gamma
    with torch.no_grad():
        return scale_from_curvatures((P * Q).sum(-1).detach(), (Q * Q).sum(-1).detach(), gamma, factor, newest)


def scale_from_curvatures(pq: torch.Tensor, qq: torch.Tensor, gamma: torch.Tensor, factor: float,
                          newest: bool = False) -> torch.Tensor:
    """:func:`envelope_scale` from the pairs' pᵀq and qᵀq (B, l) (for callers that keep them): factor·min pᵀq/qᵀq,
    or that of the newest pair (``newest``), over the pairs with positive, finite curvature; ``gamma`` (B, 1)
    where there is none."""
    bb = factor * pq / qq.clamp_min(torch.finfo(qq.dtype).tiny)
    use = (pq > 0) & (qq > 0) & torch.isfinite(bb) & torch.isfinite(qq)  # qᵀq overflowed: no scale from it
    if newest:
        idx = torch.arange(pq.shape[1], device=pq.device).expand_as(use)
        last = torch.where(use, idx, torch.full_like(idx, -1)).max(-1, keepdim=True).values
        return torch.where(last >= 0, bb.gather(1, last.clamp_min(0)), gamma)
    low = torch.where(use, bb, torch.full_like(bb, float("inf"))).min(-1, keepdim=True).values
    return torch.where(torch.isfinite(low), low, gamma)


def _min_eig(op) -> torch.Tensor:
    """The smallest eigenvalue of each row's H (a diagnostic): NaN where LAPACK's eigh does not converge
    (a nearly rank-deficient H can make it fail; the step itself does not depend on it)."""
    try:
        return op.eigvalsh()[:, 0]
    except torch.linalg.LinAlgError:
        rows = []
        for M in op.dense():
            try:
                rows.append(torch.linalg.eigvalsh(0.5 * (M + M.T))[0])
            except torch.linalg.LinAlgError:
                rows.append(M.new_tensor(float("nan")))
        return torch.stack(rows)


class LimitedMemorySR1(Solver):
    """Limited-memory SR1 with the standard skip rule |qᵀw| < r‖q‖‖w‖ (r = 1e-8).

    Args:
        memory: pairs (p, q) kept (m ≥ 1); the operator is rebuilt from them each step.
        lr: step size (the initial trial step of the Armijo search).
        init_scale: ``"auto"`` (default) for H0 = γI with γ = pᵀq/qᵀq of the newest pair with pᵀq > 1e-10
            (γ = 1 before that); ``"envelope"`` for γ = ½·min pᵀq/qᵀq over a curvature probe along −g before
            the first step (one extra evaluation) and the pairs in memory (:func:`envelope_scale`, the scaling
            of the scale-free L-SR1 form); or a fixed positive number (H0 = init_scale·I throughout).
        line_search: None (fixed step lr: the direction d = H g is used as it is, uphill or not) or
            ``"armijo"`` (backtracking by halves to f(x − t d) ≤ f − 1e-4·t·gᵀd, at most 30 halvings; a
            non-descent direction cannot satisfy it, so there it is replaced by the gradient first).
        r: the skip-rule threshold.

    extras per step: ``descent`` (1 where the SR1 direction H g satisfies gᵀd > 0, before any fallback),
    ``min_eig`` (smallest eigenvalue of H, only when N ≤ 64) and, with Armijo, ``fallback`` (1 where the
    gradient replaced an uphill direction).
    """

    name = "sr1"

    def __init__(self, memory: int = 8, lr: float = 1.0, init_scale: float | str = "auto",
                 line_search: str | None = None, r: float = 1e-8):
        check_memory(memory)
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise LSR1Error(f"lr must be a positive finite number, got {lr!r}")
        if not (isinstance(r, (int, float)) and 0 <= r < 1):
            raise LSR1Error(f"the skip threshold r must lie in [0, 1), got {r!r}")
        if init_scale not in ("auto", "envelope") and not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale)
                                         and init_scale > 0):
            raise LSR1Error(f"init_scale must be a positive number, 'auto' or 'envelope', got {init_scale!r}")
        if line_search not in (None, "armijo"):
            raise LSR1Error(f"line_search must be None or 'armijo', got {line_search!r}")
        self.memory, self.lr, self.init_scale, self.line_search, self.r = memory, float(lr), init_scale, line_search, r

    def _init(self, objective):
        x = self.state["x"]
        B, N = x.shape
        self.state["P"] = x.new_zeros(B, 0, N)
        self.state["Q"] = x.new_zeros(B, 0, N)
        self._pending_evals = 0
        if self.init_scale == "envelope":
            # the probe pair is a genuine secant pair: it seeds the memory (zero where it saw no curvature,
            # which the skip rule then ignores)
            p, q, gamma = probe_scale(objective, x, self.state["g"])
            self.state["gamma"] = ENVELOPE_FACTOR * gamma
            self.state["P"], self.state["Q"] = p.unsqueeze(1), q.unsqueeze(1)
            self._pending_evals = 1
            return
        scale = 1.0 if self.init_scale == "auto" else float(self.init_scale)
        self.state["gamma"] = x.new_full((B, 1), scale)

    def operator(self) -> LowRank:
        st = self.state
        return build_operator(st["P"], st["Q"], st["gamma"], self.r)

    def _step(self, objective):
        st = self.state
        x, f, g = st["x"], st["f"], st["g"]
        op = self.operator()
        d = op.matvec(g)
        gd = (g * d).sum(-1)
        extras = {"descent": (gd > 0).to(x.dtype)}
        if x.shape[1] <= 64:
            extras["min_eig"] = _min_eig(op)
        t = torch.full_like(f, self.lr)
        evals = 1 + self._pending_evals
        self._pending_evals = 0
        if self.line_search == "armijo":
            fallback = ~(gd > 0)
            extras["fallback"] = fallback.to(x.dtype)
            d = torch.where(fallback.unsqueeze(-1), g, d)
            gd = (g * d).sum(-1)
            done = torch.zeros_like(gd, dtype=torch.bool)
            for _ in range(30):
                f_try = objective.value(x - t.unsqueeze(-1) * d).detach()
                evals += 1
                ok = f_try <= f - 1e-4 * t * gd
                done = done | ok
                if bool(done.all()):
                    break
                t = torch.where(done, t, 0.5 * t)
        x_new = x - t.unsqueeze(-1) * d
        f_new, g_new = objective.value_and_grad(x_new)
        p, q = x_new - x, g_new - g
        P = torch.cat([st["P"], p.unsqueeze(1)], 1)[:, -self.memory:]
        Q = torch.cat([st["Q"], q.unsqueeze(1)], 1)[:, -self.memory:]
        st["P"], st["Q"] = P, Q
        if self.init_scale == "auto":
            pq, qq = (p * q).sum(-1), (q * q).sum(-1)
            st["gamma"] = torch.where(pq > 1e-10, pq / qq.clamp_min(1e-300), st["gamma"].squeeze(-1)).unsqueeze(-1)
        elif self.init_scale == "envelope":
            st["gamma"] = envelope_scale(P, Q, st["gamma"], ENVELOPE_FACTOR)
        st.update(x=x_new.detach(), f=f_new.detach(), g=g_new.detach())
        return StepInfo(direction=d, step_size=t.unsqueeze(-1), operator=op, extras=extras, evals=evals)
