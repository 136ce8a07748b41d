"""Large-scale unconstrained test functions from Andrei's collection (2008) and CUTEst, with known minima.

A third problem set for :mod:`experiments.peers` (``--sets andrei``), added for issue 23: the development set on
which ``LSR1Config.qn_bfgs()``'s update, scale and line search were chosen (docs/design.md) — so it is not held out
for those choices, the generality and MGH sets are — and which nothing in the project trains on.

Every function is defined for any N (even N where it works on pairs, N ≥ 3 where it needs neighbours), is a batched
:class:`~lsr1_core.objectives.base.Objective` (``value`` maps (B, N) to (B,); gradients by autograd) and has its
literature start and its known minimum f*:

================  ===========================================================  ===============================
name              f(x)                                                         start, f*
================  ===========================================================  ===============================
ext_white_holst   Σ 100(x_{2i} − x_{2i−1}³)² + (1 − x_{2i−1})²                  (−1.2, 1, …), 0
ext_beale         Σ Beale(x_{2i−1}, x_{2i})                                    (1, 0.8, …), 0
raydan1           Σ (i/10)(e^{x_i} − x_i)                                      1, Σ i/10
raydan2           Σ e^{x_i} − x_i                                              1, N
diagonal2         Σ e^{x_i} − x_i/i                                            1/i, Σ (1 + ln i)/i
hager             Σ e^{x_i} − √i·x_i                                           1, Σ √i(1 − ln √i)
tridia            (x_1 − 1)² + Σ_{i≥2} i(2x_i − x_{i−1})²                      1, 0
arwhead           Σ_{i<N} (3 − 4x_i) + (x_i² + x_N²)²                          1, 0
fletchcr          Σ 100(x_{i+1} − x_i + 1 − x_i²)²                             0, 0
nondquar          (x_1 − x_2)² + Σ (x_i + x_{i+1} + x_N)⁴ + (x_{N−1} + x_N)²     (1, −1, …), 0
dqdrtic           Σ x_i² + 100x_{i+1}² + 100x_{i+2}²                            3, 0
liarwhd           Σ 4(x_i² − x_1)² + (x_i − 1)²                                4, 0
quartc            Σ (x_i − i)⁴                                                 2, 0
cosine            Σ cos(x_i² − x_{i+1}/2)                                      1, −(N − 1)
genhumps          Σ sin²(2x_i) sin²(2x_{i+1}) + 0.05(x_i² + x_{i+1}²)           (−506.2, 506, …), 0
chained_wood      Σ Wood(x_{4i−3}, …, x_{4i})                                  (−3, −1, …), 0
ext_hiebert       Σ (x_{2i−1} − 10)² + (x_{2i−1}x_{2i} − 50000)²                  0, 0
================  ===========================================================  ===============================
"""
from __future__ import annotations

import math

import torch

from lsr1_core.errors import ShapeError, UnknownNameError
from lsr1_core.objectives.base import Objective, check_batch


def _i(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(1, n + 1, dtype=like.dtype, device=like.device)


def _alt(n: int, a: float, b: float) -> torch.Tensor:
    v = torch.full((n,), float(a), dtype=torch.float64)
    v[1::2] = b
    return v


def _ones(c: float):
    return lambda n: torch.full((n,), float(c), dtype=torch.float64)


# name: (f(x), start(n), f*(n), block, min N)
_F = {
    "ext_white_holst": (lambda x: (100 * (x[:, 1::2] - x[:, 0::2] ** 3) ** 2 + (1 - x[:, 0::2]) ** 2).sum(-1),
                        lambda n: _alt(n, -1.2, 1.0), lambda n: 0.0, 2, 2),
    "ext_beale": (lambda x: ((1.5 - x[:, 0::2] * (1 - x[:, 1::2])) ** 2
                             + (2.25 - x[:, 0::2] * (1 - x[:, 1::2] ** 2)) ** 2
                             + (2.625 - x[:, 0::2] * (1 - x[:, 1::2] ** 3)) ** 2).sum(-1),
                  lambda n: _alt(n, 1.0, 0.8), lambda n: 0.0, 2, 2),
    "raydan1": (lambda x: (_i(x.shape[1], x) / 10 * (torch.exp(x) - x)).sum(-1), _ones(1.0),
                lambda n: n * (n + 1) / 20, 1, 1),
    "raydan2": (lambda x: (torch.exp(x) - x).sum(-1), _ones(1.0), lambda n: float(n), 1, 1),
    "diagonal2": (lambda x: (torch.exp(x) - x / _i(x.shape[1], x)).sum(-1),
                  lambda n: 1 / torch.arange(1, n + 1, dtype=torch.float64),
                  lambda n: sum((1 + math.log(i)) / i for i in range(1, n + 1)), 1, 1),
    "hager": (lambda x: (torch.exp(x) - _i(x.shape[1], x).sqrt() * x).sum(-1), _ones(1.0),
              lambda n: sum(math.sqrt(i) * (1 - math.log(math.sqrt(i))) for i in range(1, n + 1)), 1, 1),
    "tridia": (lambda x: (x[:, 0] - 1) ** 2 + (_i(x.shape[1], x)[1:] * (2 * x[:, 1:] - x[:, :-1]) ** 2).sum(-1),
               _ones(1.0), lambda n: 0.0, 1, 2),
    "arwhead": (lambda x: ((3 - 4 * x[:, :-1]) + (x[:, :-1] ** 2 + x[:, -1:] ** 2) ** 2).sum(-1), _ones(1.0),
                lambda n: 0.0, 1, 2),
    "fletchcr": (lambda x: (100 * (x[:, 1:] - x[:, :-1] + 1 - x[:, :-1] ** 2) ** 2).sum(-1), _ones(0.0),
                 lambda n: 0.0, 1, 2),
    "nondquar": (lambda x: ((x[:, 0] - x[:, 1]) ** 2 + ((x[:, :-2] + x[:, 1:-1] + x[:, -1:]) ** 4).sum(-1)
                            + (x[:, -2] + x[:, -1]) ** 2),
                 lambda n: _alt(n, 1.0, -1.0), lambda n: 0.0, 1, 3),
    "dqdrtic": (lambda x: (x[:, :-2] ** 2 + 100 * x[:, 1:-1] ** 2 + 100 * x[:, 2:] ** 2).sum(-1), _ones(3.0),
                lambda n: 0.0, 1, 3),
    "liarwhd": (lambda x: (4 * (x ** 2 - x[:, :1]) ** 2 + (x - 1) ** 2).sum(-1), _ones(4.0), lambda n: 0.0, 1, 1),
    "quartc": (lambda x: ((x - _i(x.shape[1], x)) ** 4).sum(-1), _ones(2.0), lambda n: 0.0, 1, 1),
    "cosine": (lambda x: torch.cos(x[:, :-1] ** 2 - 0.5 * x[:, 1:]).sum(-1), _ones(1.0), lambda n: -(n - 1.0), 1, 2),
    "genhumps": (lambda x: (torch.sin(2 * x[:, :-1]) ** 2 * torch.sin(2 * x[:, 1:]) ** 2
                            + 0.05 * (x[:, :-1] ** 2 + x[:, 1:] ** 2)).sum(-1),
                 lambda n: _alt(n, -506.2, 506.0), lambda n: 0.0, 1, 2),
    "chained_wood": (lambda x: (100 * (x[:, 0::4] ** 2 - x[:, 1::4]) ** 2 + (x[:, 0::4] - 1) ** 2
                                + 90 * (x[:, 2::4] ** 2 - x[:, 3::4]) ** 2 + (1 - x[:, 2::4]) ** 2
                                + 10.1 * ((x[:, 1::4] - 1) ** 2 + (x[:, 3::4] - 1) ** 2)
                                + 19.8 * (x[:, 1::4] - 1) * (x[:, 3::4] - 1)).sum(-1),
                     lambda n: _alt(n, -3.0, -1.0), lambda n: 0.0, 4, 4),
    "ext_hiebert": (lambda x: ((x[:, 0::2] - 10) ** 2 + (x[:, 0::2] * x[:, 1::2] - 50000) ** 2).sum(-1),
                    _ones(0.0), lambda n: 0.0, 2, 2),
}

ANDREI_FUNCTIONS = tuple(sorted(_F))
#: the N each function runs at in the peers benchmark (the smallest valid N ≥ 10, and 100)
ANDREI_DIMS = (10, 100)


class AndreiFunction(Objective):
    """One function of the table above at a fixed N."""

    def __init__(self, name: str, n: int):
        if name not in _F:
            raise UnknownNameError(f"unknown function {name!r}; choose one of {list(ANDREI_FUNCTIONS)}")
        fn, start, fstar, block, min_n = _F[name]
        if isinstance(n, bool) or not isinstance(n, int) or n < min_n or n % block:
            raise ShapeError(f"{name} needs an integer N ≥ {min_n}" + (f", a multiple of {block}" if block > 1 else "")
                             + f"; got {n!r}")
        self._fn, self._start, self._fstar = fn, start, fstar
        self.dim, self.name, self.base_name = n, f"{name}_n{n}", name

    def value(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, dim=self.dim)
        return self._fn(x)

    def standard_start(self) -> torch.Tensor:
        return self._start(self.dim).view(1, -1)

    def f_star(self) -> float:
        return float(self._fstar(self.dim))
