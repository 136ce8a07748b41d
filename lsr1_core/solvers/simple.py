"""Gradient descent, Adam and Newton's method on the batched solver interface."""
from __future__ import annotations

import torch

from ..errors import LSR1Error
from ..objectives.base import solve_or_lstsq
from ..operators import Dense, Diagonal, ScaledIdentity
from .base import Solver, StepInfo


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and value > 0 and value == value and value != float("inf")):
        raise LSR1Error(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class GradientDescent(Solver):
    """x ← x − lr·g. The operator is lr·I (so the direction is g itself)."""

    name = "gd"

    def __init__(self, lr: float = 0.1):
        self.lr = _positive("lr", lr)

    def _step(self, objective):
        g = self.state["g"]
        B, N = g.shape
        a = torch.full((B, 1), self.lr, dtype=g.dtype, device=g.device)
        self._apply(objective, a, g)
        return StepInfo(direction=g, step_size=a, operator=ScaledIdentity(1.0, B, N, g.dtype, g.device))


class Adam(Solver):
    """Adam (Kingma & Ba) per row; direction m̂/(√v̂ + ε), operator diag(1/(√v̂ + ε))."""

    name = "adam"

    def __init__(self, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr = _positive("lr", lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise LSR1Error(f"betas must lie in [0, 1), got {betas}")
        self.betas, self.eps = betas, _positive("eps", eps)

    def _init(self, objective):
        self.state["m"] = torch.zeros_like(self.state["x"])
        self.state["v"] = torch.zeros_like(self.state["x"])

    def _step(self, objective):
        st, (b1, b2) = self.state, self.betas
        g = st["g"]
        t = st["k"] + 1
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g * g
        mhat = st["m"] / (1 - b1 ** t)
        vhat = st["v"] / (1 - b2 ** t)
        precond = 1.0 / (vhat.sqrt() + self.eps)
        d = mhat * precond
        a = torch.full((g.shape[0], 1), self.lr, dtype=g.dtype, device=g.device)
        self._apply(objective, a, d)
        return StepInfo(direction=d, step_size=a, operator=Diagonal(precond))


class Newton(Solver):
    """x ← x − lr·H⁻¹g with the exact Hessian (least squares where it is singular).

    On a non-convex function the Hessian may be indefinite and the Newton direction an
    ascent direction: that is what it is, and the explorer shows it.
    """

    name = "newton"

    def __init__(self, lr: float = 1.0):
        self.lr = _positive("lr", lr)

    def _step(self, objective):
        x, g = self.state["x"], self.state["g"]
        H = objective.hessian(x)
        d = solve_or_lstsq(H, g)
        a = torch.full((g.shape[0], 1), self.lr, dtype=g.dtype, device=g.device)
        self._apply(objective, a, d)
        Hinv = torch.linalg.pinv(H) if x.shape[1] <= 512 else None
        return StepInfo(direction=d, step_size=a, operator=Dense(Hinv) if Hinv is not None else None)
