"""Problems (objective + start) and the paper's 30-problem performance-profile suite (C.2.2)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UnknownNameError
from .base import Objective
from .functions import Rastrigin, Rosenbrock
from .quadratic import diagonal_quadratic

PROFILE_DIMS = (50, 100, 250, 500, 1000)
PROFILE_FAMILIES = ("quad_cond1", "quad_cond100", "quad_cond1000", "quad_cond10000", "rosenbrock", "rastrigin")
PROFILE_SEED = 7


@dataclass
class Problem:
    """An objective with a batch of fixed starting points and, where known, its minimiser."""

    name: str
    family: str
    objective: Objective
    x0: torch.Tensor

    @property
    def dim(self) -> int:
        return self.x0.shape[1]

    def x_star(self) -> torch.Tensor | None:
        xs = self.objective.minimizer()
        return None if xs is None else xs.to(self.x0)

    def to(self, device=None, dtype=None) -> "Problem":
        return Problem(self.name, self.family, self.objective.to(device=device, dtype=dtype),
                       self.x0.to(device=device, dtype=dtype))


def family_objective(family: str, n: int, dtype=torch.float64, device=None) -> Objective:
    if family.startswith("quad_cond"):
        return diagonal_quadratic(n, float(family[len("quad_cond"):]), dtype=dtype, device=device)
    if family == "rosenbrock":
        return Rosenbrock(n)
    if family == "rastrigin":
        return Rastrigin(n)
    raise UnknownNameError(f"unknown problem family {family!r}; choose one of {list(PROFILE_FAMILIES)}")


def family_starts(family: str, n: int, count: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Starting points per family: N(0, I) for quadratics, U[-2, 2] for Rosenbrock,
    U[-5.12, 5.12] (the function's usual domain) for Rastrigin."""
    if family.startswith("quad"):
        return torch.randn(count, n, generator=generator, dtype=dtype)
    if family == "rosenbrock":
        return 4 * torch.rand(count, n, generator=generator, dtype=dtype) - 2
    if family == "rastrigin":
        return 10.24 * torch.rand(count, n, generator=generator, dtype=dtype) - 5.12
    raise UnknownNameError(f"unknown problem family {family!r}; choose one of {list(PROFILE_FAMILIES)}")


def profile_suite(dims=PROFILE_DIMS, families=PROFILE_FAMILIES, starts: int = 1, dtype=torch.float64,
                  device=None) -> list[Problem]:
    """The 30 problems of C.2.2 (6 families × N ∈ {50, 100, 250, 500, 1000}), fixed starts."""
    problems = []
    for fi, fam in enumerate(families):
        for n in dims:
            g = torch.Generator().manual_seed(PROFILE_SEED * 1_000_003 + fi * 10_007 + n)
            x0 = family_starts(fam, n, starts, g).to(device=device, dtype=dtype)
            obj = family_objective(fam, n, dtype=dtype, device=device)
            problems.append(Problem(f"{fam}_n{n}", fam, obj, x0))
    return problems
