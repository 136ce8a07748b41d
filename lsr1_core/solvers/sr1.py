"""Classical symmetric-rank-one quasi-Newton (limited memory), in the paper's inverse form p = B q.

B_k = B_{k−1} + w wᵀ / (wᵀq),  w = p − B_{k−1} q.

The update satisfies the secant equation exactly but may make B indefinite, so d = B g can point
uphill — exactly what the explorer shows next to L-SR1's positive semi-definite construction.
"""
from __future__ import annotations

import torch

from ..errors import LSR1Error
from ..operators import LowRank
from .base import Solver, StepInfo


def sr1_update(B: torch.Tensor, p: torch.Tensor, q: torch.Tensor, r: float = 1e-8) -> torch.Tensor:
    """Dense batched SR1 update of (B, N, N) matrices with the pairs (p, q) (B, N), skip rule included."""
    w = p - torch.einsum("bij,bj->bi", B, q)
    wq = (w * q).sum(-1)
    skip = wq.abs() < r * q.norm(dim=-1) * w.norm(dim=-1)
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
        skip = (wq.abs() < r * q.norm(dim=-1) * w.norm(dim=-1)) | (q.norm(dim=-1) == 0)
        c = torch.where(skip, torch.zeros_like(wq), 1.0 / torch.where(skip, torch.ones_like(wq), wq))
        Ws.append(w)
        cs.append(c)
    if not Ws:
        return LowRank(P.new_zeros(B, 0, N), P.new_zeros(B, 0), gamma)
    return LowRank(torch.stack(Ws, 1), torch.stack(cs, 1), gamma)


class LimitedMemorySR1(Solver):
    """Limited-memory SR1 with the standard skip rule |qᵀw| < r‖q‖‖w‖ (r = 1e-8).

    memory: pairs kept; lr: step size; init_scale: H0 = init_scale·I, or "auto" for γ = pᵀq/qᵀq of the
    newest pair with pᵀq > 0; line_search: None (fixed step, the direction is used as it is, uphill or not)
    or "armijo" (backtracking; a non-descent direction is replaced by the gradient first).
    """

    name = "sr1"

    def __init__(self, memory: int = 8, lr: float = 1.0, init_scale: float | str = 1.0,
                 line_search: str | None = None, r: float = 1e-8):
        if not isinstance(memory, int) or memory < 1:
            raise LSR1Error(f"memory must be a positive integer, got {memory!r}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise LSR1Error(f"lr must be a positive number, got {lr!r}")
        if init_scale != "auto" and not (isinstance(init_scale, (int, float)) and init_scale > 0):
            raise LSR1Error(f"init_scale must be a positive number or 'auto', got {init_scale!r}")
        if line_search not in (None, "armijo"):
            raise LSR1Error(f"line_search must be None or 'armijo', got {line_search!r}")
        self.memory, self.lr, self.init_scale, self.line_search, self.r = memory, float(lr), init_scale, line_search, r

    def _init(self, objective):
        x = self.state["x"]
        B, N = x.shape
        self.state["P"] = x.new_zeros(B, 0, N)
        self.state["Q"] = x.new_zeros(B, 0, N)
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
            extras["min_eig"] = op.eigvalsh()[:, 0]
        t = torch.full_like(f, self.lr)
        evals = 1
        if self.line_search == "armijo":
            d = torch.where((gd <= 0).unsqueeze(-1), g, d)
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
        st.update(x=x_new.detach(), f=f_new.detach(), g=g_new.detach())
        return StepInfo(direction=d, step_size=t.unsqueeze(-1), operator=op, extras=extras, evals=evals)
