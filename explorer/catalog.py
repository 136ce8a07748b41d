"""What the explorer's pages offer, in one place: the classical solvers' labels and arguments, their default
learning rates per teaching function, the default choice of solvers, the qn form's variants, the L-SR1 model
every page starts with, and the sidebar's and the problem's value lists. The pages' widgets read these; the
computations (``lsr1_core.viz.explore``) take the :class:`SolverSpec` s built here."""
from __future__ import annotations

from lsr1_core.errors import UnknownNameError
from lsr1_core.learned.model import QN_BFGS_RULES
from lsr1_core.solvers import solver_class
from lsr1_core.viz.explore import SolverSpec

# label → (solver name, kwargs). The defaults are tuned for the 2-D teaching functions (largest curvature ≈ 1
# for the quadratic); users change the learning rate on the page.
CLASSICAL = {
    "Gradient descent": ("gd", {"lr": 1e-3}),
    "Adam": ("adam", {"lr": 0.05}),
    "L-BFGS": ("lbfgs", {"memory": 8, "line_search": "strong_wolfe"}),
    "SR1 (classical)": ("sr1", {"memory": 8, "lr": 1.0}),
    "Newton": ("newton", {"lr": 1.0}),
    "AdaHessian": ("adahessian", {"lr": 0.05}),
    "LODO": ("lodo", {"lr": 1e-3}),
}
# teaching function → solver name → learning rate (overrides CLASSICAL's)
LR_DEFAULTS = {"rosenbrock": {"gd": 1e-3, "adam": 0.05, "adahessian": 0.05, "lodo": 1e-3},
               "rastrigin": {"gd": 3e-3, "adam": 0.1, "adahessian": 0.1, "lodo": 3e-3},
               "quadratic": {"gd": 1.0, "adam": 0.2, "adahessian": 0.2, "lodo": 1.0},
               "himmelblau": {"gd": 0.01, "adam": 0.1, "adahessian": 0.1, "lodo": 0.01},
               "beale": {"gd": 0.01, "adam": 0.05, "adahessian": 0.05, "lodo": 0.01},
               "six_hump_camel": {"gd": 0.05, "adam": 0.05, "adahessian": 0.05, "lodo": 0.05}}
# the classical solvers a problem starts with, after the first L-SR1 model (and its qn variants)
DEFAULT_SOLVERS = ("SR1 (classical)", "L-BFGS", "Adam", "Gradient descent", "Newton")

# The qn form's variants a page can put beside the model as shipped: label suffix → LSR1Solver overrides. The first
# two remove one of the two changes the form's default gained on 2026-11-29 (docs/results_qn.md, sections A, C, D);
# the last is LSR1Config.qn_bfgs()'s rules (BFGS update, newest-pair γ, strong-Wolfe search; docs/design.md).
QN_VARIANTS = {
    "as shipped": (),
    "no BFGS fallback": (("fallback", "skip"),),
    "H₀ = γI, no BFGS fallback": (("fallback", "skip"), ("h0", "envelope")),
    "qn_bfgs rules (BFGS update, strong Wolfe)": tuple(QN_BFGS_RULES.items()),
}

# The L-SR1 model every page starts with (a sidebar label of lsr1_core.runs.catalog.available_models);
# the first pretrained model whose name starts with one of these, in this order. One place to change it.
# The scale-free (qn) form first; the paper form stays selectable, labelled "paper form".
DEFAULT_MODEL = ("pretrained: qn_quadratic", "pretrained: qn_", "pretrained: quadratic")
STEP_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # the sidebar's L-SR1 step scales

# κ on a log scale: equal slider steps multiply κ by about 1.5
KAPPAS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 500.0,
          700.0, 1000.0)


def lsr1_spec_variants(label: str, checkpoint: str, form: str, variants, step_scale: float = 1.0) -> dict:
    """label → SolverSpec for one L-SR1 model: one spec per chosen ``QN_VARIANTS`` entry for a qn model ("as
    shipped" keeps ``label``; the others add the variant to it), one spec for a paper-form model (the variants
    are rules of the qn form)."""
    chosen = [v for v in variants if v in QN_VARIANTS] if form == "qn" else []
    chosen = chosen or ["as shipped"]
    out = {}
    for v in chosen:
        name = label if v == "as shipped" else f"{label} ({v})"
        out[name] = SolverSpec(name, "lsr1", (), checkpoint, step_scale=step_scale,
                               qn_rules=tuple(sorted(QN_VARIANTS[v])))
    return out


def importable(name: str) -> bool:
    """Whether solver ``name`` can be built here (its module imports); pages list only those."""
    try:
        solver_class(name)
        return True
    except (ImportError, AttributeError, UnknownNameError):
        return False


def default_specs(function: str) -> dict[str, SolverSpec]:
    """label → SolverSpec of every importable classical solver, with ``function``'s default learning rates."""
    out = {}
    lrs = LR_DEFAULTS.get(function, {})
    for label, (name, kw) in CLASSICAL.items():
        if not importable(name):
            continue
        kw = dict(kw)
        if name in lrs:
            kw["lr"] = lrs[name]
        out[label] = SolverSpec(label, name, tuple(sorted(kw.items())))
    return out


def default_choice(labels) -> list[str]:
    """The solvers a problem starts with, of ``labels`` (in their order for the L-SR1 ones): the first L-SR1
    model with its qn variants, then ``DEFAULT_SOLVERS``."""
    labels = list(labels)
    first = next((l for l in labels if l.startswith("L-SR1")), None)  # the first model, with its qn variants
    default = [l for l in labels if first and (l == first or l.startswith(first + " ("))] + list(DEFAULT_SOLVERS)
    return [d for d in default if d in labels]
