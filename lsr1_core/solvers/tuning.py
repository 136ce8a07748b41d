"""Learning-rate grid search for the non-trainable solvers, per problem family (as the paper did).

    best, table = tune_lr("adam", [(objective, x0), ...], steps=100)

The score is the mean over problems of log10 of the final gap to the minimum value (or of the final value
when the minimum is unknown); a run that diverges scores +inf. Ties keep the smaller learning rate.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import LSR1Error
from . import make_solver, run

LR_GRIDS: dict[str, list[float]] = {
    "gd": [float(v) for v in np.logspace(-4, 1, 11)],
    "adam": [float(v) for v in np.logspace(-3, 1, 9)],
    "adahessian": [float(v) for v in np.logspace(-3, 1, 9)],
    "sr1": [0.1, 0.25, 0.5, 1.0],
    "lbfgs": [0.1, 0.25, 0.5, 1.0],
    "newton": [0.25, 0.5, 1.0],
    "lodo": [float(v) for v in np.logspace(-3, 0, 7)],
}


def _score(trace, objective) -> float:
    if bool(trace.diverged.any()):
        return math.inf
    f = trace.f[-1].double()
    fmin = objective.min_value()
    if fmin is not None:
        gap = (f - fmin.to(f)).clamp_min(1e-30)
        return float(torch.log10(gap).mean())
    return float(f.mean())


def tune_lr(solver: str, problems, steps: int, grid: list[float] | None = None, **solver_kwargs):
    """Best learning rate for ``solver`` over ``problems`` (a list of (objective, x0)); returns
    (best_lr, {lr: score})."""
    grid = list(grid if grid is not None else LR_GRIDS.get(solver, []))
    if not grid:
        raise LSR1Error(f"no learning-rate grid for solver {solver!r}; pass grid=[...]")
    if not problems:
        raise LSR1Error("tune_lr needs at least one (objective, x0) problem")
    table = {}
    for lr in grid:
        scores = []
        for obj, x0 in problems:
            try:
                tr = run(make_solver(solver, lr=lr, **solver_kwargs), obj, x0, steps, record_vectors=False,
                         keep_operators=False)
                scores.append(_score(tr, obj))
            except (RuntimeError, torch.linalg.LinAlgError):
                scores.append(math.inf)
        table[lr] = float(np.mean(scores)) if all(math.isfinite(s) for s in scores) else math.inf
    finite = {lr: s for lr, s in table.items() if math.isfinite(s)}
    if not finite:
        return None, table
    best = min(finite, key=lambda lr: (finite[lr], lr))
    return best, table
