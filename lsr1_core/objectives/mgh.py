"""Least-squares test problems of Moré, Garbow & Hillstrom (ACM TOMS 7, 1981), f = Σ rᵢ(x)², each with its
standard start and a global minimum f* = 0. The peers benchmark uses them as a set that nothing in the project
was tuned on (``python -m experiments.peers``).

=====================  ====  =========================================================
name (MGH number)      N     note
=====================  ====  =========================================================
brown_badly (4)        2     x* = (10⁶, 2·10⁻⁶): scales 10¹² apart
powell_badly (3)       2     x* ≈ (1.098·10⁻⁵, 9.106): badly scaled, narrow valley
beale (5)              2     x* = (3, ½)
helical (7)            3     x* = (1, 0, 0): a helical valley (atan2 branch cut)
box3d (12)             3     x* = (1, 10, 1), m = 10
ext_rosenbrock (21)    N     x* = 1, pairs of 2-D Rosenbrock
var_dim (25)           N     x* = 1, a quartic term in Σ i(xᵢ − 1)
broyden_tri (30)       N     tridiagonal system, x* unknown in closed form, f* = 0
brown_almost (27)      N     x* = (α, …, α, α^{1−N}) with α = 1, f* = 0
disc_boundary (28)     N     a discretised two-point boundary value problem, f* = 0
=====================  ====  =========================================================
"""
from __future__ import annotations

import math

import torch

from ..errors import ShapeError, UnknownNameError
from .base import Objective, check_batch


class _MGH(Objective):
    fixed_dim: int | None = None
    base_name = "mgh"

    def __init__(self, n: int | None = None):
        n = self.fixed_dim if self.fixed_dim is not None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 2 or (
                self.fixed_dim is not None and n != self.fixed_dim):
            raise ShapeError(f"{type(self).__name__} needs N = {self.fixed_dim or 'an integer ≥ 2'}, got {n!r}")
        self.dim = n
        self.name = f"{self.base_name}_n{n}"

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def value(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, self.dim)
        r = self.residuals(x)
        return (r * r).sum(-1)

    def standard_start(self) -> torch.Tensor:
        raise NotImplementedError

    def min_value(self) -> torch.Tensor:
        return torch.zeros(1, dtype=torch.float64)


class BrownBadly(_MGH):
    fixed_dim, base_name = 2, "brown_badly"

    def residuals(self, x):
        return torch.stack([x[:, 0] - 1e6, x[:, 1] - 2e-6, x[:, 0] * x[:, 1] - 2], -1)

    def standard_start(self):
        return torch.ones(1, 2, dtype=torch.float64)


class PowellBadly(_MGH):
    fixed_dim, base_name = 2, "powell_badly"

    def residuals(self, x):
        return torch.stack([1e4 * x[:, 0] * x[:, 1] - 1, torch.exp(-x[:, 0]) + torch.exp(-x[:, 1]) - 1.0001], -1)

    def standard_start(self):
        return torch.tensor([[0.0, 1.0]], dtype=torch.float64)


class Beale(_MGH):
    fixed_dim, base_name = 2, "beale"

    def residuals(self, x):
        y = torch.tensor([1.5, 2.25, 2.625], dtype=x.dtype, device=x.device)
        i = torch.arange(1, 4, dtype=x.dtype, device=x.device)
        return y - x[:, :1] * (1 - x[:, 1:2] ** i)

    def standard_start(self):
        return torch.ones(1, 2, dtype=torch.float64)


class Helical(_MGH):
    fixed_dim, base_name = 3, "helical"

    def residuals(self, x):
        # MGH's θ: arctan(x₂/x₁)/2π, plus ½ where x₁ < 0 (a jump across x₁ = 0, as in the original)
        x1 = torch.where(x[:, 0] == 0, torch.full_like(x[:, 0], 1e-300), x[:, 0])
        theta = torch.atan(x[:, 1] / x1) / (2 * math.pi) + 0.5 * (x[:, 0] < 0).to(x.dtype)
        r = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2)
        return torch.stack([10 * (x[:, 2] - 10 * theta), 10 * (r - 1), x[:, 2]], -1)

    def standard_start(self):
        return torch.tensor([[-1.0, 0.0, 0.0]], dtype=torch.float64)


class Box3D(_MGH):
    fixed_dim, base_name = 3, "box3d"

    def residuals(self, x):
        t = 0.1 * torch.arange(1, 11, dtype=x.dtype, device=x.device)
        x1, x2, x3 = x[:, :1], x[:, 1:2], x[:, 2:3]
        return torch.exp(-t * x1) - torch.exp(-t * x2) - x3 * (torch.exp(-t) - torch.exp(-10 * t))

    def standard_start(self):
        return torch.tensor([[0.0, 10.0, 20.0]], dtype=torch.float64)


class ExtRosenbrock(_MGH):
    base_name = "ext_rosenbrock"

    def __init__(self, n: int):
        if isinstance(n, int) and n % 2:
            raise ShapeError(f"the extended Rosenbrock function needs an even N, got {n}")
        super().__init__(n)

    def residuals(self, x):
        a, b = x[:, 0::2], x[:, 1::2]
        return torch.cat([10 * (b - a * a), 1 - a], -1)

    def standard_start(self):
        x = torch.ones(1, self.dim, dtype=torch.float64)
        x[:, 0::2] = -1.2
        return x


class VarDim(_MGH):
    base_name = "var_dim"

    def residuals(self, x):
        i = torch.arange(1, self.dim + 1, dtype=x.dtype, device=x.device)
        s = ((x - 1) * i).sum(-1, keepdim=True)
        return torch.cat([x - 1, s, s * s], -1)

    def standard_start(self):
        return (1 - torch.arange(1, self.dim + 1, dtype=torch.float64) / self.dim).unsqueeze(0)


class BroydenTri(_MGH):
    base_name = "broyden_tri"

    def residuals(self, x):
        z = torch.zeros_like(x[:, :1])
        left, right = torch.cat([z, x[:, :-1]], -1), torch.cat([x[:, 1:], z], -1)
        return (3 - 2 * x) * x - left - 2 * right + 1

    def standard_start(self):
        return -torch.ones(1, self.dim, dtype=torch.float64)


class BrownAlmost(_MGH):
    base_name = "brown_almost"

    def residuals(self, x):
        n = self.dim
        lin = x[:, :-1] + x.sum(-1, keepdim=True) - (n + 1)
        return torch.cat([lin, x.prod(-1, keepdim=True) - 1], -1)

    def standard_start(self):
        return torch.full((1, self.dim), 0.5, dtype=torch.float64)


class DiscBoundary(_MGH):
    base_name = "disc_boundary"

    def residuals(self, x):
        n = self.dim
        h = 1.0 / (n + 1)
        t = h * torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
        z = torch.zeros_like(x[:, :1])
        left, right = torch.cat([z, x[:, :-1]], -1), torch.cat([x[:, 1:], z], -1)
        return 2 * x - left - right + h * h * (x + t + 1) ** 3 / 2

    def standard_start(self):
        n = self.dim
        t = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
        return (t * (t - 1)).unsqueeze(0)


MGH_FUNCTIONS: dict[str, type[_MGH]] = {c.base_name: c for c in (
    BrownBadly, PowellBadly, Beale, Helical, Box3D, ExtRosenbrock, VarDim, BroydenTri, BrownAlmost, DiscBoundary)}


def mgh_function(name: str, n: int | None = None) -> _MGH:
    try:
        cls = MGH_FUNCTIONS[name]
    except KeyError:
        raise UnknownNameError(f"unknown MGH function {name!r}; choose one of {sorted(MGH_FUNCTIONS)}") from None
    return cls(n)
