"""Rescaled objectives: f̃(y) = c · f(y / s), the same problem in other units.

Used to meta-train on several problem scales and to test scale invariance: a scale-free optimizer started
at y₀ = s·x₀ on f̃ visits y_k = s·x_k, where x_k are its iterates on f from x₀.
"""
from __future__ import annotations

import torch

from ..errors import LSR1Error
from .base import Objective


class Scaled(Objective):
    """f̃(y) = c·f(y/s), with c and s positive: scalars or one per problem (shape (B,))."""

    def __init__(self, base: Objective, c=1.0, s=1.0):
        self.base = base
        self.c = torch.as_tensor(c, dtype=torch.float64)
        self.s = torch.as_tensor(s, dtype=torch.float64)
        for name, t in (("c", self.c), ("s", self.s)):
            if t.dim() > 1 or not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
                raise LSR1Error(f"scale {name} must be positive and finite (a number or one per problem), got {t}")
        self.name = f"scaled_{getattr(base, 'name', 'objective')}"
        self.dim, self.batch, self.convex = base.dim, base.batch, base.convex

    def _cs(self, x):
        c, s = self.c.to(x), self.s.to(x)
        return (c.view(-1) if c.dim() else c), (s.view(-1, 1) if s.dim() else s)

    def value(self, y):
        c, s = self._cs(y)
        return c * self.base.value(y / s)

    def value_and_grad(self, y):
        c, s = self._cs(y)
        f, g = self.base.value_and_grad(y / s)
        return c * f, (c.view(-1, 1) if c.dim() else c) * g / s

    def hvp(self, y, v):
        c, s = self._cs(y)
        return (c.view(-1, 1) if c.dim() else c) * self.base.hvp(y / s, v / s) / s

    def minimizer(self):  # y* = s·x*
        xs = self.base.minimizer()
        return None if xs is None else xs * self._cs(xs)[1]

    def min_value(self):  # f̃* = c·f*
        m = self.base.min_value()
        return None if m is None else self._cs(m)[0] * m

    def check(self, x):
        self.base.check(x)
