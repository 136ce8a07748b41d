"""Computation behind the explorer's pages: run solvers on a problem and derive per-step series.

Pure functions of small, hashable arguments (a :class:`Setting` of :class:`SolverSpec` s), so a page can cache
them. What the pages offer (solver labels, default learning rates, the qn variants) is the explorer's
catalogue, ``explorer/catalog.py``, not this module's.
"""
from __future__ import annotations

import math
import numbers
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
from ..solvers import make_solver, run
from ..trace import Trace


@dataclass(frozen=True)
class SolverSpec:
    """One solver of a run: its label, its name in ``lsr1_core.solvers`` and its arguments (an L-SR1 model: its
    checkpoint, step scale and qn rules). Frozen and hashable."""

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


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class Setting:
    """One 2-D run as a page sets it up: the teaching function and its parameters, the start, the solvers (each
    :class:`SolverSpec` with its learning rate), the number of steps and the buffer size L. Frozen and hashable,
    and checked when made (an ``LSR1Error`` names what is wrong), so that a page passes it unchanged from its
    widgets to the run cache (whose key it is) and to :func:`run_2d`.

    ``fn_kwargs`` may be given as a dict; it is kept as sorted (name, value) pairs, so that settings made from
    the same widgets are equal whatever the order. ``memory=None``: each solver's own buffer size."""

    function: str
    fn_kwargs: tuple = ()
    start: tuple = ()
    solvers: tuple = ()
    steps: int = 100
    memory: int | None = None

    def __post_init__(self):
        put = object.__setattr__
        if not isinstance(self.function, str):
            raise LSR1Error(f"the function must be the name of a 2-D function, got {self.function!r}")
        items = self.fn_kwargs.items() if isinstance(self.fn_kwargs, Mapping) else self.fn_kwargs
        try:
            items = list(items)
        except TypeError:
            raise LSR1Error(f"the function's parameters must be a mapping, got {self.fn_kwargs!r}") from None
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and _real(item[1])
                    and math.isfinite(item[1])):
                raise LSR1Error(f"the function's parameters must be (name, finite number) pairs, got {item!r}")
        if len({name for name, _ in items}) != len(items):
            raise LSR1Error(f"the function's parameters name one twice: {self.fn_kwargs!r}")
        put(self, "fn_kwargs", tuple(sorted(items)))
        start = self.start
        if isinstance(start, (str, bytes)) or not hasattr(start, "__len__") or len(start) != 2 \
                or not all(_real(v) for v in start):
            raise LSR1Error(f"the start point must be two numbers (x₁, x₂), got {start!r}")
        put(self, "start", (float(start[0]), float(start[1])))
        solvers = tuple(self.solvers) if isinstance(self.solvers, (list, tuple)) else None
        if solvers is None or not all(isinstance(s, SolverSpec) for s in solvers):
            raise LSR1Error(f"the solvers must be a list of SolverSpec, got {self.solvers!r}")
        put(self, "solvers", solvers)
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise LSR1Error(f"the number of steps must be a positive integer, got {self.steps!r}")
        if self.memory is not None:
            check_memory(self.memory, "the buffer size")
        try:
            hash(self.solvers)
        except TypeError:
            raise LSR1Error("a solver's arguments must be hashable values (numbers, strings, tuples)") from None
        check_start(self.function, self.start, self.kwargs)

    @property
    def kwargs(self) -> dict:
        """The function's parameters as keyword arguments of ``teaching_function``."""
        return dict(self.fn_kwargs)

    def objective(self):
        """The teaching function this setting runs on."""
        return teaching_function(self.function, **self.kwargs)


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
    try:
        f = teaching_function(function, **(fn_kwargs or {}))
    except LSR1Error:
        raise
    except (TypeError, ValueError) as e:  # a parameter the function does not take, or a value it refuses
        raise LSR1Error(f"wrong parameters {fn_kwargs!r} for the 2-D function {function!r}: {e}") from None
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


def run_2d(setting: Setting | str, fn_kwargs: dict | None = None, start: tuple | None = None,
           specs: list[SolverSpec] | None = None, steps: int | None = None, memory: int | None = None) -> RunResult:
    """Run every solver of ``setting`` from its start for its steps. ``run_2d(function, fn_kwargs, start, specs,
    steps, memory)`` is the same with the setting's fields (checked the same way)."""
    if not isinstance(setting, Setting):
        setting = Setting(setting, fn_kwargs if fn_kwargs is not None else {}, start,
                          specs if specs is not None else (), steps, memory)
    elif (fn_kwargs, start, specs, steps, memory) != (None,) * 5:
        raise TypeError("run_2d takes either one Setting or the fields of one, not both")
    function, fn_kwargs, start, specs = setting.function, setting.kwargs, setting.start, setting.solvers
    steps, memory = setting.steps, setting.memory
    obj = setting.objective()
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
