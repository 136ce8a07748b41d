"""Stopping rules in the conventions users already know (scipy's ``gtol``/``ftol``, torch.optim.LBFGS's
``tolerance_grad``/``tolerance_change``), one implementation for :func:`~lsr1_core.solvers.run` (batched, per
row) and :class:`~lsr1_core.learned.LSR1Optimizer` (one row).

* gradient: ``max_i |g_i| ≤ gtol`` — scipy's L-BFGS-B ``gtol`` (unconstrained: the projected gradient is the
  gradient) and torch's ``tolerance_grad``. Checked at the start too, so a start that is already stationary
  costs no step.
* change of f: scipy's ``ftol``, ``(f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) ≤ ftol``; or torch's
  ``tolerance_change``, an absolute ``|f_k − f_{k+1}| < tol`` or ``max_i |x_{k+1,i} − x_{k,i}| < tol``.
  A step that did not move x at all (a failed line search that a solver's recovery may still repair, e.g. the
  qn form's restart) only counts when the step before it did not move either: one such step is a stumble, two
  in a row is a stall.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import LSR1Error
from ..rowops import NP_SCALAR, max_abs, row_max_abs


def check_tolerance(name: str, value) -> float | None:
    """None, or a non-negative finite real number (not a bool); anything else is refused naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LSR1Error(f"{name} must be a non-negative number or None, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise LSR1Error(f"{name} must be a non-negative finite number or None, got {value!r}")
    return value


def gradient_converged(g: torch.Tensor, gtol: float | None) -> torch.Tensor:
    """(B,) bool: max_i |g_i| ≤ gtol (all False when gtol is None)."""
    if gtol is None:
        return torch.zeros(g.shape[0], dtype=torch.bool, device=g.device)
    return row_max_abs(g) <= gtol


class StopRule:
    """Per-row convergence test of a batched run. ``mode`` "scipy" reads ``ftol`` as scipy's relative change
    of f; "torch" reads it as torch's absolute ``tolerance_change`` (of f or of x)."""

    def __init__(self, gtol: float | None = None, ftol: float | None = None, mode: str = "scipy",
                 names: tuple[str, str] = ("gtol", "ftol")):
        if mode not in ("scipy", "torch"):
            raise LSR1Error(f"mode must be 'scipy' or 'torch', got {mode!r}")
        self.gtol = check_tolerance(names[0], gtol)
        self.ftol = check_tolerance(names[1], ftol)
        self.mode, self.names = mode, names
        self._still: torch.Tensor | None = None  # rows whose previous step did not move x

    @property
    def active(self) -> bool:
        return self.gtol is not None or self.ftol is not None

    def at_start(self, g: torch.Tensor) -> tuple[torch.Tensor, list[str | None]]:
        hit = gradient_converged(g, self.gtol)
        return hit, [self._g_reason(g[r], 0) if bool(hit[r]) else None for r in range(g.shape[0])]

    def after_step(self, k: int, x_old, f_old, x_new, f_new, g_new) -> tuple[torch.Tensor, list[str | None]]:
        """(B,) bool of rows that converged with step ``k`` (1-based), and a reason per row."""
        B = f_new.shape[0]
        g_hit = gradient_converged(g_new, self.gtol)
        f_hit = torch.zeros_like(g_hit)
        if self.ftol is None:  # (whether x moved matters only to the test on the change of f)
            self._still = None
        else:
            moved = (x_new != x_old).any(-1)
            df = f_old - f_new
            if self.mode == "scipy":
                scale = torch.maximum(torch.maximum(f_old.abs(), f_new.abs()), torch.ones_like(f_new))
                small = df / scale <= self.ftol
            else:
                small = (df.abs() < self.ftol) | (row_max_abs(x_new - x_old) < self.ftol)
            still_before = self._still if self._still is not None else torch.zeros_like(moved)
            f_hit = small & (moved | still_before) & ~g_hit
            self._still = ~moved
        reasons: list[str | None] = [None] * B
        for r in (g_hit | f_hit).nonzero().flatten().tolist():
            if bool(g_hit[r]):
                reasons[r] = self._g_reason(g_new[r], k)
            else:
                what = ("relative decrease of f" if self.mode == "scipy" else "change of f or x")
                reasons[r] = (f"converged at step {k}: {what} ≤ {self.names[1]} = {self.ftol:g} "
                              f"(f {float(f_old[r]):.6g} → {float(f_new[r]):.6g})")
        return g_hit | f_hit, reasons

    # --- one row (LSR1Optimizer): the same tests on numbers of the row's dtype, a few tensor calls per step ---------
    def at_start_one(self, g: torch.Tensor) -> str | None:
        """:meth:`at_start` for a (1, N) gradient: the reason, or None where it has not converged."""
        if self.gtol is None or not self._g_small(g):
            return None
        return self._g_reason(g[0], 0)

    def after_step_one(self, k: int, x_old, f_old, x_new, f_new, g_new) -> str | None:
        """:meth:`after_step` for one row (the same decisions; x "moved" where max|x_new − x_old| > 0, which is
        x_new ≠ x_old for finite x): the reason, or None where it has not converged. ``_still`` is then a bool."""
        if self.gtol is not None and self._g_small(g_new):
            self._still = None if self.ftol is None else not bool((x_new != x_old).any())
            return self._g_reason(g_new[0], k)
        if self.ftol is None:
            self._still = None
            return None
        F = NP_SCALAR.get(f_new.dtype, np.float64)
        big = max_abs(x_new - x_old)
        moved = big != 0  # (NaN: x is always finite here)
        fo, fn = F(f_old.reshape(-1)[0].item()), F(f_new.reshape(-1)[0].item())
        with np.errstate(all="ignore"):
            df = fo - fn
            tol = F(self.ftol)
            if self.mode == "scipy":
                small = df / max(max(abs(fo), abs(fn)), F(1)) <= tol
            else:
                small = abs(df) < tol or F(big) < tol
        still_before = bool(self._still) if self._still is not None else False
        self._still = not moved
        if not (small and (moved or still_before)):
            return None
        what = "relative decrease of f" if self.mode == "scipy" else "change of f or x"
        return (f"converged at step {k}: {what} ≤ {self.names[1]} = {self.ftol:g} "
                f"(f {float(fo):.6g} → {float(fn):.6g})")

    def _g_small(self, g: torch.Tensor) -> bool:
        """max|g| ≤ gtol, compared in g's dtype (as the tensor comparison does)."""
        F = NP_SCALAR.get(g.dtype, np.float64)
        return bool(F(max_abs(g)) <= F(self.gtol))

    def _g_reason(self, g_row: torch.Tensor, k: int) -> str:
        return (f"converged at step {k}: max|g| = {float(g_row.abs().max()):.3g} ≤ {self.names[0]} = "
                f"{self.gtol:g}")
