"""Classic test functions, batched over (B, N), with analytic derivatives where cheap."""
from __future__ import annotations

import math

import torch

from ..errors import ShapeError, UnknownNameError
from .base import check_dense_hessian, Objective, check_batch, solve_or_lstsq
from .quadratic import Quadratic


class Rosenbrock(Objective):
    """f(x) = Σ_{i<N} a·(x_{i+1} − x_i²)² + (1 − x_i)², minimum 0 at (1, …, 1).

    ``a = 100`` is the standard form. The Hessian is tridiagonal; Newton directions are
    computed with a dense solve, which is fine up to N of a few thousand.
    """

    def __init__(self, n: int | None = None, a: float = 100.0, c: float = 1.0):
        if n is not None and n < 2:
            raise ShapeError(f"Rosenbrock needs N >= 2, got {n}")
        self.dim, self.a, self.c = n, a, c
        self.name = f"rosenbrock_n{n}" if n else "rosenbrock"

    def value(self, x):
        x0, x1 = x[:, :-1], x[:, 1:]
        return (self.a * (x1 - x0 * x0) ** 2 + self.c * (1 - x0) ** 2).sum(-1)

    def grad(self, x):
        x0, x1 = x[:, :-1], x[:, 1:]
        t = x1 - x0 * x0
        g = torch.zeros_like(x)
        g = g + torch.nn.functional.pad(-4 * self.a * x0 * t - 2 * self.c * (1 - x0), (0, 1))
        g = g + torch.nn.functional.pad(2 * self.a * t, (1, 0))
        return g

    def value_and_grad(self, x):
        return self.value(x), self.grad(x)

    def hessian_bands(self, x):
        x0, x1 = x[:, :-1], x[:, 1:]
        diag = torch.zeros_like(x)
        diag = diag + torch.nn.functional.pad(12 * self.a * x0 * x0 - 4 * self.a * x1 + 2 * self.c, (0, 1))
        diag = diag + torch.nn.functional.pad(torch.full_like(x0, 2 * self.a), (1, 0))
        off = -4 * self.a * x0
        return diag, off

    def hvp(self, x, v):
        diag, off = self.hessian_bands(x)
        hv = diag * v
        hv = hv + torch.nn.functional.pad(off * v[:, 1:], (0, 1)) + torch.nn.functional.pad(off * v[:, :-1], (1, 0))
        return hv

    def hessian(self, x):

        check_dense_hessian(x)
        check_batch(x)
        diag, off = self.hessian_bands(x)
        H = torch.diag_embed(diag) + torch.diag_embed(off, offset=1) + torch.diag_embed(off, offset=-1)
        return H

    def minimizer(self):
        if self.dim is None:
            return None
        return torch.ones(1, self.dim, dtype=torch.float64)

    def min_value(self):
        return torch.zeros(1, dtype=torch.float64)


class Rastrigin(Objective):
    """f(x) = A·N + Σ x_i² − A cos(2π x_i), minimum 0 at the origin; highly multimodal."""

    def __init__(self, n: int | None = None, A: float = 10.0):
        self.dim, self.A = n, A
        self.name = f"rastrigin_n{n}" if n else "rastrigin"

    def value(self, x):
        return self.A * x.shape[1] + (x * x - self.A * torch.cos(2 * math.pi * x)).sum(-1)

    def grad(self, x):
        return 2 * x + 2 * math.pi * self.A * torch.sin(2 * math.pi * x)

    def value_and_grad(self, x):
        return self.value(x), self.grad(x)

    def hess_diag(self, x):
        return 2 + 4 * math.pi ** 2 * self.A * torch.cos(2 * math.pi * x)

    def hvp(self, x, v):
        return self.hess_diag(x) * v

    def hessian(self, x):

        check_dense_hessian(x)
        return torch.diag_embed(self.hess_diag(x))

    def newton_direction(self, x):
        # diagonal Hessian, possibly indefinite or singular: divide where safe
        h = self.hess_diag(x.detach())
        g = self.grad(x.detach())
        safe = h.abs() > 1e-12
        return torch.where(safe, g / torch.where(safe, h, torch.ones_like(h)), g)

    def minimizer(self):
        return None if self.dim is None else torch.zeros(1, self.dim, dtype=torch.float64)

    def min_value(self):
        return torch.zeros(1, dtype=torch.float64)


class _TwoD(Objective):
    """2-D teaching function: value in closed form, derivatives by autograd."""

    dim = 2
    bounds: tuple[tuple[float, float], tuple[float, float]] = ((-2.0, 2.0), (-2.0, 2.0))
    default_start: tuple[float, float] = (0.0, 0.0)
    minima: tuple[tuple[float, float], ...] = ()

    def check(self, x):
        check_batch(x, 2)

    def minimizer(self):
        if not self.minima:
            return None
        return torch.tensor([self.minima[0]], dtype=torch.float64)


class Himmelblau(_TwoD):
    name = "himmelblau"
    bounds = ((-5.0, 5.0), (-5.0, 5.0))
    default_start = (-0.5, -0.5)
    minima = ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126))

    def value(self, x):
        a, b = x[:, 0], x[:, 1]
        return (a * a + b - 11) ** 2 + (a + b * b - 7) ** 2


class Beale(_TwoD):
    name = "beale"
    bounds = ((-4.5, 4.5), (-4.5, 4.5))
    default_start = (1.0, 1.5)
    minima = ((3.0, 0.5),)

    def value(self, x):
        a, b = x[:, 0], x[:, 1]
        return (1.5 - a + a * b) ** 2 + (2.25 - a + a * b * b) ** 2 + (2.625 - a + a * b ** 3) ** 2


class SixHumpCamel(_TwoD):
    name = "six_hump_camel"
    bounds = ((-2.0, 2.0), (-1.2, 1.2))
    default_start = (-1.5, 1.0)
    minima = ((0.0898, -0.7126), (-0.0898, 0.7126))

    def value(self, x):
        a, b = x[:, 0], x[:, 1]
        return (4 - 2.1 * a * a + a ** 4 / 3) * a * a + a * b + (-4 + 4 * b * b) * b * b


class Rosenbrock2D(Rosenbrock, _TwoD):
    name = "rosenbrock"
    bounds = ((-2.0, 2.0), (-1.0, 3.0))
    default_start = (-1.2, 1.0)
    minima = ((1.0, 1.0),)

    def __init__(self, a: float = 100.0):
        Rosenbrock.__init__(self, 2, a=a)
        self.name = "rosenbrock"


class Rastrigin2D(Rastrigin, _TwoD):
    name = "rastrigin"
    bounds = ((-5.12, 5.12), (-5.12, 5.12))
    default_start = (3.3, -2.4)
    minima = ((0.0, 0.0),)

    def __init__(self, A: float = 10.0):
        Rastrigin.__init__(self, 2, A=A)
        self.name = "rastrigin"


class RotatedQuadratic2D(Quadratic, _TwoD):
    """½ xᵀ R diag(1, 1/κ) Rᵀ x: condition number κ, principal axis rotated by ``angle`` degrees.

    The largest curvature is 1, so gradient descent is stable for step sizes below 2.
    """

    bounds = ((-3.0, 3.0), (-3.0, 3.0))
    default_start = (-2.5, 1.5)
    minima = ((0.0, 0.0),)

    def __init__(self, cond: float = 10.0, angle: float = 30.0):
        if cond < 1:
            raise ValueError(f"condition number must be >= 1, got {cond}")
        th = math.radians(angle)
        R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
        H = R @ torch.diag(torch.tensor([1.0, 1.0 / cond], dtype=torch.float64)) @ R.T
        Quadratic.__init__(self, H, None, name="quadratic")
        self.cond, self.angle = cond, angle

    def to(self, device=None, dtype=None):
        return self  # tensors are moved lazily in value()/grad() below

    def _H(self, x):
        return self.H.to(device=x.device, dtype=x.dtype)

    def value(self, x):
        H = self._H(x)[0]
        return 0.5 * ((x @ H) * x).sum(-1)

    def grad(self, x):
        return x @ self._H(x)[0]

    def value_and_grad(self, x):
        return self.value(x), self.grad(x)

    def hvp(self, x, v):
        return v @ self._H(x)[0]

    def hessian(self, x):

        check_dense_hessian(x)
        return self._H(x).expand(x.shape[0], -1, -1).clone()

    def newton_direction(self, x):
        return solve_or_lstsq(self.hessian(x), self.grad(x).detach())

    def minimizer(self):
        return torch.zeros(1, 2, dtype=torch.float64)


TEACHING_FUNCTIONS = {
    "rosenbrock": Rosenbrock2D,
    "rastrigin": Rastrigin2D,
    "quadratic": RotatedQuadratic2D,
    "himmelblau": Himmelblau,
    "beale": Beale,
    "six_hump_camel": SixHumpCamel,
}


def teaching_function(name: str, **kwargs) -> _TwoD:
    """A 2-D function for the explorer by name (``quadratic`` takes ``cond`` and ``angle``)."""
    try:
        cls = TEACHING_FUNCTIONS[name]
    except KeyError:
        raise UnknownNameError(f"unknown 2-D function {name!r}; choose one of {sorted(TEACHING_FUNCTIONS)}") from None
    return cls(**kwargs)
