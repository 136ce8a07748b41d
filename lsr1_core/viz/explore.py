"""Computation behind the explorer's pages: run solvers on a problem and derive per-step series.

Pure functions of small, hashable arguments, so a page can cache them.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ..analysis import cosine_to_newton
from ..device import single_thread  # noqa: F401 - re-exported: the pages' and viz modules' name
from ..errors import LSR1Error, UnknownNameError, check_memory
from ..learned import LSR1Solver
from ..objectives import quadratic_split, teaching_function
from ..solvers import make_solver, run, solver_class
from ..trace import Trace

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
LR_DEFAULTS = {"rosenbrock": {"gd": 1e-3, "adam": 0.05, "adahessian": 0.05, "lodo": 1e-3},
               "rastrigin": {"gd": 3e-3, "adam": 0.1, "adahessian": 0.1, "lodo": 3e-3},
               "quadratic": {"gd": 1.0, "adam": 0.2, "adahessian": 0.2, "lodo": 1.0},
               "himmelblau": {"gd": 0.01, "adam": 0.1, "adahessian": 0.1, "lodo": 0.01},
               "beale": {"gd": 0.01, "adam": 0.05, "adahessian": 0.05, "lodo": 0.01},
               "six_hump_camel": {"gd": 0.05, "adam": 0.05, "adahessian": 0.05, "lodo": 0.05}}


@dataclass
class SolverSpec:
    label: str
    name: str
    kwargs: tuple = ()  # sorted (key, value) pairs so the spec is hashable
    checkpoint: str | None = None
    step_scale: float = 1.0  # L-SR1 only: multiplies every step
    qn_rules: tuple = ()  # L-SR1 qn form only: sorted (rule, value) pairs, e.g. (("fallback", "skip"),)

    def build(self, memory: int | None = None):
        if self.name == "lsr1":
            return LSR1Solver(checkpoint=self.checkpoint, memory=memory, name=self.label,
                              step_scale=float(self.step_scale), **dict(self.qn_rules))
        kw = dict(self.kwargs)
        if self.name in ("lbfgs", "sr1") and memory is not None:
            kw["memory"] = memory
        s = make_solver(self.name, **kw)
        s.name = self.label
        return s


# The qn form's ablations a page can put beside the model as shipped: label suffix → LSR1Solver overrides. Each
# removes one of the two changes the form's default gained on 2026-11-29 (docs/results_qn.md, sections A, C, D).
QN_VARIANTS = {
    "as shipped": (),
    "no BFGS fallback": (("fallback", "skip"),),
    "H₀ = γI, no BFGS fallback": (("fallback", "skip"), ("h0", "envelope")),
}


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


@dataclass
class RunResult:
    """Traces and derived per-step series for one problem, every solver."""

    function: str
    fn_kwargs: dict
    start: tuple
    traces: dict[str, Trace]
    # the series are mappings label → (T,) array, computed when first read (``LazySeries``)
    cosines: Mapping[str, np.ndarray]  # cos(d_k, Newton direction)
    secant: Mapping[str, np.ndarray]   # ‖p_k − B_{k+1} q_k‖/‖p_k‖, textbook (NaN without one)
    f_star: float | None
    errors: dict[str, str] = field(default_factory=dict)
    secant_made: Mapping[str, np.ndarray] = field(default_factory=dict)  # ‖p_k − B_k q_k‖/‖p_k‖ (L-SR1's Eq. 8)


def check_start(function: str, start, fn_kwargs: dict | None = None) -> None:
    f = teaching_function(function, **(fn_kwargs or {}))
    (x0, x1), (y0, y1) = f.bounds
    x, y = start
    if not (np.isfinite(x) and np.isfinite(y)):
        raise LSR1Error("the start point must be finite numbers")
    if not (x0 <= x <= x1 and y0 <= y <= y1):
        raise LSR1Error(f"start point ({x:g}, {y:g}) lies outside the plotted range "
                        f"x ∈ [{x0:g}, {x1:g}], y ∈ [{y0:g}, {y1:g}] of {function}")


class LazySeries(Mapping):
    """Per-solver series computed on first access, once (``make(label)``): the Trajectories page never reads
    the Curvature page's series, which cost a Hessian solve and two operator products per step (0.3 s of a
    default run on 2 cores). Pickles as a plain dict of every value."""

    def __init__(self, make, labels):
        self._make, self._labels, self._done, self._lock = make, list(labels), {}, threading.Lock()

    def __getitem__(self, label):
        if label not in self._done:
            if label not in self._labels:
                raise KeyError(label)
            with self._lock, single_thread():
                if label not in self._done:
                    self._done[label] = self._make(label)
        return self._done[label]

    def __iter__(self):
        return iter(self._labels)

    def __len__(self):
        return len(self._labels)

    def __repr__(self):
        return f"LazySeries({self._labels!r}, computed={list(self._done)!r})"

    def __reduce__(self):
        return dict, (dict(self.items()),)


def run_2d(function: str, fn_kwargs: dict, start: tuple, specs: list[SolverSpec], steps: int,
           memory: int | None = None) -> RunResult:
    if not isinstance(steps, int) or steps < 1:
        raise LSR1Error(f"the number of steps must be a positive integer, got {steps!r}")
    if memory is not None:
        check_memory(memory, "the buffer size")
    check_start(function, start, fn_kwargs)
    obj = teaching_function(function, **fn_kwargs)
    x0 = torch.tensor([start], dtype=torch.float64)
    traces, errors = {}, {}
    with single_thread():
        for spec in specs:
            try:
                solver = spec.build(memory)
                dtype = torch.float64
                if spec.name == "lsr1":
                    solver.net.double()
                tr = run(solver, obj, x0.to(dtype), steps)
            except (LSR1Error, UnknownNameError, ImportError, RuntimeError) as e:
                errors[spec.label] = str(e)
                continue
            traces[spec.label] = tr
    cos = LazySeries(lambda lab: newton_cosines(traces[lab], obj), traces)
    sec = LazySeries(lambda lab: secant_series(traces[lab]), traces)
    made = LazySeries(lambda lab: secant_series(traces[lab], after_update=False), traces)
    xs = obj.minimizer()
    f_star = float(obj.value(xs.to(torch.float64))[0]) if xs is not None else None
    return RunResult(function, dict(fn_kwargs), tuple(start), traces, cos, sec, f_star, errors, made)


def newton_cosines(tr: Trace, obj, gtol: float = 1e-12) -> np.ndarray:
    """cos(d_k, Newton direction) per step; NaN once ‖g_k‖ ≤ gtol·max(1, ‖g_0‖): at the minimiser both
    directions are rounding noise (or exactly zero, which the cosine reports as 0, a false "orthogonal")."""
    out = np.full(tr.steps, np.nan)
    g0 = float(tr.g[0, 0].norm()) if len(tr.g) else 0.0
    for k in range(tr.steps):
        if 0 <= int(tr.diverged_at[0]) <= k:
            break
        if len(tr.g) > k and float(tr.g[k, 0].norm()) <= gtol * max(1.0, g0):
            continue
        nd = obj.newton_direction(tr.x[k])
        out[k] = float(cosine_to_newton(tr.d[k], nd)[0])
    return out


def secant_series(tr: Trace, after_update: bool = True) -> np.ndarray:
    """Relative secant residual per step k = 0..T−1 with p_k = x_{k+1} − x_k, q_k = g_{k+1} − g_k (row 0;
    the linear part for L-SR1).

    ``after_update`` (the textbook secant condition): ‖p_k − B_{k+1} q_k‖/‖p_k‖, the operator built *after*
    seeing (p_k, q_k), which classical SR1 and L-BFGS satisfy exactly; NaN at the last step (no B_{T}).
    Otherwise ‖p_k − B_k q_k‖/‖p_k‖, the operator that *made* step k: what L-SR1's training penalty (Eq. 8)
    lowers, and what a method that does not update its matrix (gradient descent, B = I) is judged by."""
    out = np.full(tr.steps, np.nan)
    div = int(tr.diverged_at[0])
    for k in range(tr.steps):
        j = k + 1 if after_update else k
        op = tr.operators[j] if j < len(tr.operators) else None
        if op is None or 0 <= div <= j:
            continue
        p = tr.x[k + 1] - tr.x[k]
        q = tr.g[k + 1] - tr.g[k]
        if float(p.norm()) == 0:
            continue
        lin = getattr(op, "linear_matvec", None)
        Bq = lin(q) if lin is not None else op.matvec(q)
        out[k] = float(((p - Bq).norm(dim=-1) / p.norm(dim=-1))[0])
    return out


def operator_matrix(tr: Trace, k: int) -> np.ndarray | None:
    """Dense (N, N) curvature matrix of step k (row 0), or None."""
    if k >= len(tr.operators) or tr.operators[k] is None:
        return None
    return tr.operators[k].dense()[0].double().cpu().numpy()


def true_inverse_hessian(obj, x: torch.Tensor) -> np.ndarray:
    H = obj.hessian(x.to(torch.float64))[0].cpu().numpy()
    return np.linalg.pinv(H)


def spectra_over_steps(tr: Trace, obj) -> dict[str, list]:
    """Per step: eigenvalues of B_k and of the true inverse Hessian at x_k (row 0)."""
    steps, approx, true = [], [], []
    for k in range(tr.steps):
        M = operator_matrix(tr, k)
        if M is None or 0 <= int(tr.diverged_at[0]) <= k:
            continue
        steps.append(k + 1)
        approx.append(np.linalg.eigvalsh(0.5 * (M + M.T)))
        true.append(np.linalg.eigvalsh(true_inverse_hessian(obj, tr.x[k])))
    return {"steps": steps, "approx": approx, "true": true}


def run_nd(n: int, row: int, steps: int, memory: int, models: tuple = ()):
    """L-BFGS, classical SR1 and the L-SR1 ``models`` (:class:`SolverSpec` s, with their step scale and qn rules)
    on row ``row`` of the N-D test quadratics: per solver the Newton cosines, the textbook secant residuals and
    (N ≤ 200) the spectra."""
    q64, x064 = quadratic_split("test", n=n, size=max(row + 1, 4), dtype=torch.float64)
    q64 = q64.subset([row])
    x0 = x064[row:row + 1]
    solvers = {"L-BFGS": make_solver("lbfgs", memory=memory, line_search="strong_wolfe"),
               "SR1 (classical)": make_solver("sr1", memory=memory)}
    for spec in models:
        s = spec.build(memory)
        s.net.double()
        solvers[spec.label] = s
    cos, sec, spectra = {}, {}, {}
    for lab, s in solvers.items():
        tr = run(s, q64, x0, steps)
        cos[lab] = newton_cosines(tr, q64)
        sec[lab] = secant_series(tr)
        if n <= 200:
            spectra[lab] = spectra_over_steps(tr, q64)
    return cos, sec, spectra
