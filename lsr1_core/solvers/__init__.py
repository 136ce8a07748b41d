"""Classical and learned solvers on one batched interface.

``make_solver(name, **kwargs)`` builds any solver by name; ``run(solver, objective, x0, steps)``
returns a :class:`~lsr1_core.trace.Trace`.
"""
from __future__ import annotations

import importlib

from ..errors import UnknownNameError
from .base import Solver, StepInfo, run

# name -> (module, class); modules are imported lazily so that optional parts stay optional.
SOLVERS: dict[str, tuple[str, str]] = {
    "gd": ("lsr1_core.solvers.simple", "GradientDescent"),
    "adam": ("lsr1_core.solvers.simple", "Adam"),
    "newton": ("lsr1_core.solvers.simple", "Newton"),
    "lbfgs": ("lsr1_core.solvers.lbfgs", "LBFGS"),
    "sr1": ("lsr1_core.solvers.sr1", "LimitedMemorySR1"),
    "adahessian": ("lsr1_core.solvers.adahessian", "AdaHessian"),
    "lodo": ("lsr1_core.solvers.lodo", "LODO"),
    "lsr1": ("lsr1_core.learned.solver", "LSR1Solver"),
}


def solver_class(name: str):
    try:
        mod, cls = SOLVERS[name]
    except KeyError:
        raise UnknownNameError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}") from None
    return getattr(importlib.import_module(mod), cls)


def make_solver(name: str, **kwargs) -> Solver:
    """Build a solver by name, e.g. ``make_solver('lbfgs', memory=8, line_search='strong_wolfe')``."""
    return solver_class(name)(**kwargs)


__all__ = ["Solver", "StepInfo", "run", "SOLVERS", "make_solver", "solver_class"]
