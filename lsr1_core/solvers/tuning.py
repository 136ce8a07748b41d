"""Learning-rate grid search for the non-trainable solvers, per problem family (as the paper did:
"learning rates tuned by hyperparameter search").

    best, table = tune_lr("adam", [(objective, x0), ...], steps=100)
    per_family = tune_lr_per_family("adam", profile_suite(dims=(50,)), steps=100)

Every learning rate of the grid runs ``steps`` iterations on every problem and gets a score (lower is
better); a run in which any row diverges (non-finite iterate, value or gradient) or that raises a
numerical error scores +inf. The best rate is the one with the lowest finite score; ties keep the smaller
rate; if every rate diverged the best is None.

Metrics (``metric=``):
  "final_f"  (default) mean over problems and rows of log10(f(x_T) − f*) where the minimum value f* is
             known (gaps clamped at 1e-30), else the mean final value f(x_T);
  "mean_f"   the same averaged over all iterates x_1..x_T (rewards fast progress, not just the end);
  "distance" mean log10 ‖x_T − x*‖ (needs a known minimiser; close to the paper's measure);
  or a callable ``(trace, objective) -> float``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..errors import LSR1Error
from . import make_solver, run

# Default grids, log-spaced (half-decades unless said otherwise).
LR_GRIDS: dict[str, list[float]] = {
    "gd": [float(v) for v in np.logspace(-4, 1, 11)],         # 1e-4 … 10
    "adam": [float(v) for v in np.logspace(-3, 1, 9)],        # 1e-3 … 10
    "adahessian": [float(v) for v in np.logspace(-3, 1, 9)],  # 1e-3 … 10
    "sr1": [float(v) for v in np.logspace(-2, 0, 5)],         # 0.01 … 1 (1 = the unit quasi-Newton step)
    "lbfgs": [float(v) for v in np.logspace(-2, 0, 5)],       # 0.01 … 1
    "newton": [float(v) for v in np.logspace(-1, 0, 3)],      # 0.1 … 1
    "lodo": [float(v) for v in np.logspace(-3, 0, 7)],        # 1e-3 … 1
}

METRICS = ("final_f", "mean_f", "distance")
_GAP_FLOOR = 1e-30


def _log_gap(f: torch.Tensor, objective) -> torch.Tensor:
    fmin = objective.min_value()
    if fmin is None:
        return f
    return torch.log10((f - fmin.to(f)).clamp_min(_GAP_FLOOR))


def score_trace(trace, objective, metric: str | Callable = "final_f") -> float:
    """The score of one run (lower is better; +inf if any row diverged)."""
    if bool(trace.diverged.any()):
        return math.inf
    if callable(metric):
        val = float(metric(trace, objective))
    elif metric == "final_f":
        val = float(_log_gap(trace.f[-1].double(), objective).mean())
    elif metric == "mean_f":
        val = float(_log_gap(trace.f[1:].double(), objective).mean()) if trace.steps else math.inf
    elif metric == "distance":
        xs = objective.minimizer()
        if xs is None:
            raise LSR1Error(f"metric 'distance' needs a known minimiser; {getattr(objective, 'name', objective)!r} "
                            f"has none (use metric='final_f')")
        dist = (trace.x[-1].double() - xs.to(trace.x[-1]).double()).norm(dim=-1)
        val = float(torch.log10(dist.clamp_min(_GAP_FLOOR)).mean())
    else:
        raise LSR1Error(f"unknown metric {metric!r}; choose one of {list(METRICS)} or pass a callable")
    return val if math.isfinite(val) else math.inf


def _as_problems(problems) -> list[tuple]:
    """Accept a list of (objective, x0) pairs or Problem objects, or a single one of either."""
    if hasattr(problems, "objective") and hasattr(problems, "x0"):
        return [(problems.objective, problems.x0)]
    if isinstance(problems, tuple) and len(problems) == 2 and isinstance(problems[1], torch.Tensor):
        return [problems]
    out = []
    for p in problems:
        if hasattr(p, "objective") and hasattr(p, "x0"):
            out.append((p.objective, p.x0))
        elif isinstance(p, (tuple, list)) and len(p) == 2:
            out.append((p[0], p[1]))
        else:
            raise LSR1Error(f"each problem must be an (objective, x0) pair or a Problem, got {type(p).__name__}")
    return out


def tune_lr(solver: str, problems, grid: list[float] | None = None, steps: int = 100,
            metric: str | Callable = "final_f", **solver_kwargs):
    """Grid search over learning rates for ``solver`` on ``problems``.

    ``problems``: (objective, x0) pairs or :class:`~lsr1_core.objectives.Problem` objects (one family);
    ``grid``: the rates to try (default ``LR_GRIDS[solver]``); ``steps``: iterations per run;
    ``metric``: see the module docstring; other keyword arguments go to the solver.
    Returns ``(best_lr, {lr: score})`` with ``best_lr`` None if every rate diverged.
    """
    grid = list(grid if grid is not None else LR_GRIDS.get(solver, []))
    if not grid:
        raise LSR1Error(f"no learning-rate grid for solver {solver!r}; pass grid=[...]")
    bad = [lr for lr in grid if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr))]
    if bad:
        raise LSR1Error(f"learning rates must be positive finite numbers, got {bad}")
    if not isinstance(steps, int) or steps < 1:
        raise LSR1Error(f"steps must be a positive integer, got {steps!r}")
    if not callable(metric) and metric not in METRICS:
        raise LSR1Error(f"unknown metric {metric!r}; choose one of {list(METRICS)} or pass a callable")
    problems = _as_problems(problems)
    if not problems:
        raise LSR1Error("tune_lr needs at least one (objective, x0) problem")
    table: dict[float, float] = {}
    for lr in grid:
        scores = []
        for obj, x0 in problems:
            try:
                tr = run(make_solver(solver, lr=lr, **solver_kwargs), obj, x0, steps, record_vectors=False,
                         keep_operators=False)
                scores.append(score_trace(tr, obj, metric))
            except (RuntimeError, torch.linalg.LinAlgError, OverflowError, ZeroDivisionError):
                scores.append(math.inf)
        table[float(lr)] = float(np.mean(scores)) if all(math.isfinite(s) for s in scores) else math.inf
    finite = {lr: s for lr, s in table.items() if math.isfinite(s)}
    if not finite:
        return None, table
    best = min(finite, key=lambda lr: (finite[lr], lr))
    return best, table


def tune_lr_per_family(solver: str, problems, grid: list[float] | None = None, steps: int = 100,
                       metric: str | Callable = "final_f", **solver_kwargs) -> dict[str, tuple]:
    """:func:`tune_lr` once per problem family.

    ``problems``: a dict ``{family: [(objective, x0) | Problem, ...]}`` or a list of Problem objects
    (grouped by their ``family``). Returns ``{family: (best_lr, table)}``.
    """
    if isinstance(problems, dict):
        groups = dict(problems)
    else:
        groups = {}
        for p in problems:
            if not hasattr(p, "family"):
                raise LSR1Error("tune_lr_per_family needs Problem objects (with .family) or a dict {family: problems}")
            groups.setdefault(p.family, []).append(p)
    return {fam: tune_lr(solver, probs, grid=grid, steps=steps, metric=metric, **solver_kwargs)
            for fam, probs in groups.items()}
