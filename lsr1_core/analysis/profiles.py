"""Dolan-Moré performance profiles with the paper's measure m = ‖x̂ − x*‖ / ‖x_w − x*‖."""
from __future__ import annotations

import math

import numpy as np


def performance_measure(final_x: dict[str, np.ndarray], x_star: np.ndarray) -> dict[str, float]:
    """The paper's measure for one problem: distance to x* relative to the worst solver's.

    ``final_x`` maps solver → final iterate (None or non-finite = failure → inf).
    """
    dist = {}
    for s, x in final_x.items():
        if x is None or not np.all(np.isfinite(x)):
            dist[s] = math.inf
        else:
            dist[s] = float(np.linalg.norm(np.asarray(x) - x_star))
    finite = [d for d in dist.values() if math.isfinite(d)]
    worst = max(finite) if finite else math.inf
    if not finite or worst == 0:
        return {s: (1.0 if math.isfinite(d) else math.inf) for s, d in dist.items()}
    return {s: d / worst for s, d in dist.items()}


# Measures below double precision's resolution are exact solves: a final point 1e-154 from x* and one that
# landed on x* bit for bit are the same answer.
MEASURE_FLOOR = float(np.finfo(np.float64).eps)


def performance_profile(table: dict[str, dict[str, float]], taus: np.ndarray | None = None,
                        floor: float = MEASURE_FLOOR):
    """Dolan-Moré profile from ``table[problem][solver] = m`` (lower is better; inf = failure).

    r_{p,s} = m_{p,s} / min_s m_{p,s}; ρ_s(τ) = |{p : r_{p,s} ≤ τ}| / |P|. Measures are floored at ``floor``
    (default: machine epsilon, m being a distance relative to the worst solver's), so solvers that all reach x*
    to rounding tie. With ``floor=0`` the best measure on a problem may be exactly 0; then solvers that are also
    0 get ratio 1 and the others inf (a 1e-154 distance would count as a failure).
    Returns (taus, {solver: ρ_s(taus)}).
    """
    problems = list(table)
    if not problems:
        raise ValueError("performance_profile needs at least one problem")
    solvers = sorted({s for row in table.values() for s in row})
    ratios = {s: [] for s in solvers}
    for p in problems:
        row = table[p]
        vals = [max(row.get(s, math.inf), floor) for s in solvers]
        best = min(vals)
        for s, v in zip(solvers, vals):
            if not math.isfinite(v):
                r = math.inf
            elif best == 0:
                r = 1.0 if v == 0 else math.inf
            else:
                r = v / best
            ratios[s].append(r)
    if taus is None:
        finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
        hi = max(finite + [1.0])
        taus = np.unique(np.concatenate([[1.0], np.logspace(0, math.log10(max(hi, 1.0001)) + 0.1, 200)]))
    prof = {s: np.array([(np.array(rs) <= t).mean() for t in taus]) for s, rs in ratios.items()}
    return taus, prof


def profile_auc(taus: np.ndarray, rho: np.ndarray) -> float:
    """Area under ρ(τ) over log10 τ, normalised to [0, 1]: one number to rank solvers."""
    lt = np.log10(taus)
    if lt[-1] == lt[0]:
        return float(rho[0])
    return float(np.trapezoid(rho, lt) / (lt[-1] - lt[0]))
