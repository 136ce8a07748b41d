"""The solvers of the paper's Figure 3c comparison on its 30-problem suite (C.2.2): which are tuned per family,
which run with fixed settings, which L-SR1 variants and checkpoints, their labels, and :func:`build`. The report
(``python -m experiments.profiles``) and the app's comparison bench (``viz.bench``, the Benchmarks page) both
build their solvers here, so the page's line-up is the report's."""
from __future__ import annotations

from pathlib import Path

from ..learned import LSR1Solver
from ..solvers import make_solver

TUNED = ("gd", "adam", "adahessian", "lodo")
FIXED = {"lbfgs": {"memory": 8, "line_search": "strong_wolfe"}, "sr1": {"memory": 8, "line_search": "armijo"}}
LSR1_MODELS = {"lsr1": "pretrained/quadratic", "lsr1_nosec": "pretrained/quadratic_nosec",
               "lsr1_qn": "pretrained/qn_quadratic", "lsr1_qn_L64": "pretrained/qn_quadratic",
               "lsr1_qn_skip": "pretrained/qn_quadratic", "lsr1_qn_envelope": "pretrained/qn_quadratic"}
# Test buffer sizes. The paper form runs with Table 7's test value L = 64 (``memory``); the qn form with
# L = 8, the memory L-BFGS and SR1 get here, and once more at L = 64 (``lsr1_qn_L64``): its positive
# semi-definite SR1 skips more pairs as the memory grows (measured, docs/results_profiles.md).
QN_MEMORY = {"lsr1_qn": 8, "lsr1_qn_skip": 8, "lsr1_qn_envelope": 8}
# The qn form's initial matrix (LSR1Config.h0): the two-scale rule, and once with H₀ = γI as its ablation row.
QN_H0 = {"lsr1_qn": "two_scale", "lsr1_qn_L64": "two_scale", "lsr1_qn_skip": "two_scale", "lsr1_qn_envelope": "envelope"}
# What the qn form does with a pair SR1 cannot use positively (LSR1Config.fallback): the BFGS update (the default),
# and skipping it as the two ablation rows (two-scale H₀; H₀ = γI, the rule before both changes).
QN_FALLBACK = {"lsr1_qn": "bfgs", "lsr1_qn_L64": "bfgs", "lsr1_qn_skip": "skip", "lsr1_qn_envelope": "skip"}
# Table 7: one model per task, trained at N = 100 (quadratics → the quadratic families). A family whose
# model is not shipped falls back to the N = 2 quadratic model (C.2.1); the results record which was used.
FAMILY_TASK = {"rosenbrock": "rosenbrock", "rastrigin": "rastrigin"}


def model_for(name: str, family: str) -> str:
    """The checkpoint (path without suffix) that L-SR1 variant ``name`` uses on ``family``."""
    suffix = "_nosec" if name.endswith("_nosec") else ""
    task = FAMILY_TASK.get(family, "quadratic")
    own = f"pretrained/{'qn_' if name.startswith('lsr1_qn') else ''}profile_{task}{suffix}"
    return own if Path(own + ".json").exists() else LSR1_MODELS[name]


def build(name: str, lr: float | None, memory: int, family: str = "quad_cond1"):
    if name in LSR1_MODELS:
        s = LSR1Solver(checkpoint=model_for(name, family), memory=QN_MEMORY.get(name, memory), h0=QN_H0.get(name),
                        fallback=QN_FALLBACK.get(name))
        s.net.double()
        return s
    if name in FIXED:
        return make_solver(name, **FIXED[name])
    return make_solver(name, lr=lr)


NAMES = {"gd": "gradient descent", "adam": "Adam", "adahessian": "AdaHessian", "lodo": "LODO", "lbfgs": "L-BFGS",
         "sr1": "SR1 (classical, Armijo)", "lsr1": "L-SR1 (paper form)", "lsr1_nosec": "L-SR1 w/o secant (paper form)",
         "lsr1_qn": "L-SR1 (scale-free qn form, L = 8)", "lsr1_qn_L64": "L-SR1 (scale-free qn form, L = 64)",
         "lsr1_qn_skip": "L-SR1 (qn form, L = 8, no BFGS fallback: ablation)",
         "lsr1_qn_envelope": "L-SR1 (qn form, L = 8, H₀ = γI, no BFGS fallback: ablation)"}
