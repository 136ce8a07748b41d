"""The pair memory of the qn form's L-BFGS update (``update="bfgs"``): the stored pairs' inner products and the
two-loop recursion that applies H, and the test of where the compact paths apply (zero output layers).

Shared by the batched step (:mod:`lsr1_core.learned.qn`) and its one-row form (:mod:`lsr1_core.learned.qn_one`), so
both take their numbers from the same code.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..rowops import row_dot
from ..solvers import lbfgs as _lbfgs  # (its ONE_ROW switch also selects the one-row two-loop recursion)
from . import compact

if TYPE_CHECKING:
    from .model import LSR1Net


def heads_are_zero(net: LSR1Net) -> bool:
    """True where both generators' output layers are exactly zero (weights and biases): the network's output is
    then 0 for every finite input. (Read every time: a cache keyed on version counters would miss writes through
    ``.data``.)"""
    mods = net._modules  # (the modules' own dicts: what attribute access reads, without its per-name lookups)
    for name in ("vector_generator", "lr_generator"):
        params = mods[name]._modules["fc2"]._parameters
        for t in (params["weight"], params["bias"]):
            # (one call against a shared zero, no 0-d result to read: as `not t.any()` decides, NaN and −0.0 included)
            if not torch.equal(t, compact.shared_const(0.0, tuple(t.shape), t.dtype, t.device)):
                return False
    return True


def compact_applies(net: LSR1Net, U: torch.Tensor | None) -> bool:
    """True where :func:`qn_propose` takes the compact path: no gradient wanted, the generators' output layers are
    zero (u = 0, α = 1) and so are the stored corrections U (unless ``compact.FORCE_EXPLICIT`` is set)."""
    return (not compact.FORCE_EXPLICIT and not torch.is_grad_enabled() and heads_are_zero(net)
            and compact.is_zero(U))


def pair_stats(base, s: int, m: int) -> torch.Tensor:
    """(B, m, 3) float64: pᵀq, pᵀp, qᵀq of the pairs base[:, s:s+m] of a pair buffer (:func:`compact.append_pair`).
    Slots are written once, so the buffer keeps them (and a new buffer those of the window it copied): a new pair
    costs three O(N) products, a buffer without them its window's."""
    B, cap = base.shape[:2]
    compact.sync_stats(base)  # (numbers the one-row step kept, written into the tensor)
    cache = getattr(base, "_lsr1_pairstats", None)
    if cache is None or getattr(base, "_lsr1_pairstats_upto", -1) != s + m - 1:
        if cache is None:
            cache = torch.zeros(B, cap, 3, dtype=torch.float64, device=base.device)
        Pw, Qw = base[:, s:s + m, 0], base[:, s:s + m, 1]
        cache[:, s:s + m] = torch.stack([(Pw * Qw).sum(-1), (Pw * Pw).sum(-1), (Qw * Qw).sum(-1)], -1).double()
    else:
        p, q = base[:, s + m - 1, 0], base[:, s + m - 1, 1]
        cache[:, s + m - 1] = torch.stack([row_dot(p, q), row_dot(p, p), row_dot(q, q)], -1).double()
    base._lsr1_pairstats, base._lsr1_pairstats_upto = cache, s + m
    base._lsr1_stats_one = None  # (the one-row step's numbers are read again from this tensor: qn_one._stats)
    return cache[:, s:s + m]


def two_loop(P: torch.Tensor, Q: torch.Tensor, rho: torch.Tensor, gamma: torch.Tensor, u: torch.Tensor,
             m: int) -> torch.Tensor:
    """H u for the L-BFGS inverse of the first m pairs (B, ·, N) over γI, with ρ (B, ·) (0: the pair does not enter):
    the two-loop recursion, in place on one work vector (each pair costs one dot product and one fused update).
    One row on the CPU keeps the recursion's scalars as Python numbers (two tensor calls per pair instead of six;
    the same operations, rounded as the machine's dot product sums)."""
    if u.shape[0] == 1 and u.device.type == "cpu" and _lbfgs.ONE_ROW:
        return two_loop_one(P[0], Q[0], rho[0].tolist(), gamma.reshape(-1)[0], u[0], m).unsqueeze(0)
    y = u.clone().unsqueeze(1)  # (B, 1, N)
    alphas = []
    for i in range(m - 1, -1, -1):
        a = rho[:, i, None, None] * torch.bmm(y, P[:, i].unsqueeze(-1))  # (B, 1, 1)
        y.baddbmm_(a, Q[:, i].unsqueeze(1), alpha=-1)
        alphas.append(a)
    y.mul_(gamma.unsqueeze(-1))
    for i in range(m):
        b = rho[:, i, None, None] * torch.bmm(y, Q[:, i].unsqueeze(-1))
        y.baddbmm_(alphas[m - 1 - i] - b, P[:, i].unsqueeze(1))
    return y.squeeze(1)


def two_loop_one(P, Q, rho: list, gamma, u, m: int):
    """:func:`two_loop` for one row: P, Q (·, N), ρ a list of numbers (pairs with ρ = 0 do not enter)."""
    return two_loop_rows(list(P[:m].unbind(0)), list(Q[:m].unbind(0)), rho, gamma, u, m)


def two_loop_rows(P: list, Q: list, rho: list, gamma, u, m: int):
    """:func:`two_loop_one` on the pairs as lists of (N,) vectors (a caller that keeps them spends no indexing)."""
    y = u.clone()
    alphas = [0.0] * m
    for i in range(m - 1, -1, -1):
        if rho[i] != 0:
            alphas[i] = rho[i] * float(torch.dot(y, P[i]))
            y.add_(Q[i], alpha=-alphas[i])
    y.mul_(gamma)
    for i in range(m):
        if rho[i] != 0:
            y.add_(P[i], alpha=alphas[i] - rho[i] * float(torch.dot(y, Q[i])))
    return y
