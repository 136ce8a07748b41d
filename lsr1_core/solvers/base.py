"""The batched solver interface and the loop that runs any solver into a Trace."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import LSR1Error, ShapeError
from ..objectives.base import Objective, check_finite
from ..operators import CurvatureOperator
from ..trace import Trace
from .stopping import StopRule


@dataclass
class StepInfo:
    """What one step did: x_new = x − step_size ⊙ direction."""

    direction: torch.Tensor
    step_size: torch.Tensor
    operator: CurvatureOperator | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    evals: int = 1


def check_objective_output(objective, x: torch.Tensor, f, g) -> None:
    """value_and_grad must give f of shape (B,) and g of x's shape: a scalar f or a (B, 1) gradient would be
    broadcast silently by some solvers and fail deep inside others."""
    name = getattr(objective, "name", type(objective).__name__)
    if not isinstance(f, torch.Tensor) or not isinstance(g, torch.Tensor):
        raise ShapeError(f"objective {name!r}: value_and_grad must return two tensors (f, g), got "
                         f"({type(f).__name__}, {type(g).__name__})")
    B = x.shape[0]
    if tuple(f.shape) != (B,):
        raise ShapeError(f"objective {name!r} returned f of shape {tuple(f.shape)} for x of shape {tuple(x.shape)}; "
                         f"it must give one value per row, shape ({B},)")
    if tuple(g.shape) != tuple(x.shape):
        raise ShapeError(f"objective {name!r} returned a gradient of shape {tuple(g.shape)} for x of shape "
                         f"{tuple(x.shape)}; it must have x's shape")
    if g.dtype != x.dtype or g.device != x.device:
        raise LSR1Error(f"objective {name!r} returned a gradient of {g.dtype} on {g.device} for x of {x.dtype} on "
                        f"{x.device}; give x0 the objective's dtype and device")


class Solver:
    """A batched solver. Subclasses implement :meth:`_init` and :meth:`_step`.

    The state lives in ``self.state`` (a dict of tensors with the batch first, always holding
    ``x``, ``f`` and ``g`` at the current iterate). Each row of the batch is an independent
    problem: nothing couples rows, so a row that diverges never disturbs the others.
    """

    name = "solver"

    def reset(self, objective: Objective, x0: torch.Tensor) -> None:
        objective.check(x0)
        if x0.shape[0] == 0:
            raise ShapeError("x0 has no rows (shape (0, N)): give at least one starting point")
        check_finite(x0)
        x0 = x0.detach().clone()
        try:
            f, g = objective.value_and_grad(x0)
        except RuntimeError as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            # a float64 objective with a float32 start, or another device: say what to do; otherwise the
            # objective's own error is the message
            hint = (" — give x0 the objective's dtype and device (objective.to(dtype=…) or x0.to(…))"
                    if any(w in msg.lower() for w in ("dtype", "scalar type", "device", "float", "double", "half"))
                    else "")
            raise LSR1Error(f"the objective raised {type(e).__name__} at the starting point ({x0.dtype}, "
                            f"{x0.device}): {msg}{hint}") from e
        check_objective_output(objective, x0, f, g)
        self.state = {"x": x0, "f": f.detach(), "g": g.detach(), "k": 0}
        self._init(objective)

    def step(self, objective: Objective) -> StepInfo:
        info = self._step(objective)
        self.state["k"] += 1
        return info

    def _init(self, objective: Objective) -> None:
        pass

    def _step(self, objective: Objective) -> StepInfo:
        raise NotImplementedError

    def _apply(self, objective: Objective, step_size: torch.Tensor, direction: torch.Tensor) -> None:
        """x ← x − step_size ⊙ direction, and refresh f and g."""
        x = self.state["x"] - step_size * direction
        f, g = objective.value_and_grad(x)
        self.state.update(x=x.detach(), f=f.detach(), g=g.detach())

    def freeze_rows(self, rows: torch.Tensor, x: torch.Tensor, f: torch.Tensor, g: torch.Tensor) -> None:
        """Put diverged rows back at their last finite point and scrub non-finite state."""
        for key, val in list(self.state.items()):
            if isinstance(val, torch.Tensor) and val.is_floating_point():
                self.state[key] = torch.nan_to_num(val, nan=0.0, posinf=0.0, neginf=0.0)
        self.state["x"][rows] = x[rows]
        self.state["f"][rows] = f[rows]
        self.state["g"][rows] = g[rows]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


BLOWUP = 1e8


def run(solver: Solver, objective: Objective, x0: torch.Tensor, steps: int, *, record_vectors: bool = True,
        keep_operators: bool = True, blowup: float | None = BLOWUP, gtol: float | None = None,
        ftol: float | None = None) -> Trace:
    """Run ``solver`` for ``steps`` steps from ``x0`` (B, N) and return a :class:`Trace`.

    A row whose iterate, value or gradient becomes non-finite is marked diverged at that step,
    frozen at its last finite point, and the others go on. So is a row that blows up while staying
    finite: f rising above f(x₀) + blowup·(|f(x₀)| + 1), or ‖x‖ above blowup·(‖x₀‖ + 1)
    (``blowup=None`` turns that off).

    Stopping (:mod:`~lsr1_core.solvers.stopping`, scipy's conventions): a row stops once max|g| ≤ ``gtol`` or
    the relative decrease of f in a step is ≤ ``ftol``; it is then frozen and its later steps count no
    evaluations (``Trace.row_evals``); ``Trace.stopped_at`` and ``Trace.stop_reason`` say when and why. When
    every row has stopped the run ends early (the remaining steps repeat the final state). Both default to the
    solver's own ``gtol``/``ftol`` attributes (e.g. ``LSR1Solver(gtol=…)``), else None: no stopping.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise LSR1Error(f"steps must be a non-negative integer, got {steps!r}")
    if blowup is not None and not (isinstance(blowup, (int, float)) and blowup > 0):
        raise LSR1Error(f"blowup must be a positive number or None, got {blowup!r}")
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2:
        raise ShapeError(f"x0 must be a tensor of shape (B, N), got "
                         f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")
    rule = StopRule(gtol if gtol is not None else getattr(solver, "gtol", None),
                    ftol if ftol is not None else getattr(solver, "ftol", None))
    t0 = time.perf_counter()
    with torch.no_grad():
        solver.reset(objective, x0)
    st = solver.state
    B, N = st["x"].shape
    if not torch.isfinite(st["f"]).all() or not torch.isfinite(st["g"]).all():
        bad = (~torch.isfinite(st["f"]) | ~torch.isfinite(st["g"]).all(-1)).nonzero().flatten().tolist()
        raise LSR1Error(f"the objective is not finite at the starting point (rows {bad[:10]})")
    xs, fs, gs = [st["x"].clone()], [st["f"].clone()], [st["g"].clone()]
    ds, als, ops, evals = [], [], [], []
    extras: dict[str, list] = {}
    diverged_at = torch.full((B,), -1, dtype=torch.long)
    reason: list[str | None] = [None] * B
    stopped_at = torch.full((B,), -1, dtype=torch.long)
    stop_reason: list[str | None] = [None] * B
    row_evals: list[torch.Tensor] = []
    if rule.active:
        hit, why = rule.at_start(st["g"])
        stopped_at[hit.cpu()] = 0
        stop_reason = why
    x_last, f_last, g_last = st["x"].clone(), st["f"].clone(), st["g"].clone()
    if blowup is not None:
        f_cap = st["f"] + blowup * (st["f"].abs() + 1)
        x_cap = blowup * (st["x"].norm(dim=-1) + 1)
    for k in range(steps):
        if bool(((diverged_at >= 0) | (stopped_at >= 0)).all()):
            _fill_stopped(steps - k, st, fs, evals, row_evals, xs, gs, ds, als, ops, extras, record_vectors)
            break
        idle = (diverged_at >= 0) | (stopped_at >= 0)
        x_prev, f_prev = x_last, f_last  # the state before this step (x_last is a copy, refreshed after it)
        with torch.no_grad():
            info = solver.step(objective)
        st = solver.state
        row_evals.append(torch.where(idle, 0, int(info.evals)))
        bad_x = ~torch.isfinite(st["x"]).all(-1)
        bad_f = ~torch.isfinite(st["f"])
        bad_g = ~torch.isfinite(st["g"]).all(-1)
        blown = torch.zeros_like(bad_f)
        if blowup is not None:
            blown = ~(bad_x | bad_f | bad_g) & ((st["f"] > f_cap) | (st["x"].norm(dim=-1) > x_cap))
        new_bad = (bad_x | bad_f | bad_g | blown).cpu() & (diverged_at < 0)
        if new_bad.any():
            for r in new_bad.nonzero().flatten().tolist():
                if blown[r]:
                    reason[r] = (f"blew up at step {k + 1}: f = {float(st['f'][r]):.3g}, ‖x‖ = "
                                 f"{float(st['x'][r].norm()):.3g} from f = {float(fs[0][r]):.3g}, ‖x‖ = "
                                 f"{float(xs[0][r].norm()):.3g} (more than {blowup:g}×; diverged)")
                    continue
                what = "iterate" if bad_x[r] else ("objective value" if bad_f[r] else "gradient")
                reason[r] = f"{what} became non-finite at step {k + 1} (diverged)"
            diverged_at[new_bad] = k + 1
        if rule.active:
            hit, why = rule.after_step(k + 1, x_prev, f_prev, st["x"], st["f"], st["g"])
            hit = hit.cpu() & ~idle & (diverged_at < 0)
            for r in hit.nonzero().flatten().tolist():
                stop_reason[r] = why[r]
            stopped_at[hit] = k + 1
            # a converged row stays where it converged (a diverged one goes back to its last finite point)
            keep = hit.to(st["x"].device)
            x_last = torch.where(keep.view(-1, 1), st["x"], x_last)
            f_last = torch.where(keep, st["f"], f_last)
            g_last = torch.where(keep.view(-1, 1), st["g"], g_last)
        frozen = ((diverged_at >= 0) | (stopped_at >= 0)).to(st["x"].device)
        if frozen.any():
            solver.freeze_rows(frozen, x_last, f_last, g_last)
            st = solver.state
        x_last, f_last, g_last = st["x"].clone(), st["f"].clone(), st["g"].clone()
        d = torch.nan_to_num(info.direction.detach())
        a = torch.nan_to_num(info.step_size.detach().expand(B, N))
        if frozen.any():
            d = d.masked_fill(frozen.view(-1, 1), 0.0)
            a = a.masked_fill(frozen.view(-1, 1), 0.0)
        fs.append(st["f"].clone())
        evals.append(info.evals)
        if record_vectors or k == steps - 1:
            xs.append(x_last)
            gs.append(g_last)
            ds.append(d)
            als.append(a)
        ops.append(info.operator.detach() if (keep_operators and info.operator is not None) else None)
        for key, val in info.extras.items():
            extras.setdefault(key, []).append(val.detach())
    empty = torch.zeros(0, B, N, dtype=xs[0].dtype, device=xs[0].device)
    trace = Trace(
        solver=solver.name, objective=getattr(objective, "name", "objective"),
        x=torch.stack(xs), f=torch.stack(fs), g=torch.stack(gs),
        d=torch.stack(ds) if ds else empty, alpha=torch.stack(als) if als else empty,
        operators=ops, extras={k: torch.stack(v) for k, v in extras.items() if len(v) == steps},
        evals=torch.tensor(evals, dtype=torch.long), diverged_at=diverged_at, reason=reason,
        wall_time_s=time.perf_counter() - t0,
        row_evals=torch.stack(row_evals) if row_evals else torch.zeros(0, B, dtype=torch.long),
        stopped_at=stopped_at, stop_reason=stop_reason)
    return trace


def _fill_stopped(remaining, st, fs, evals, row_evals, xs, gs, ds, als, ops, extras, record_vectors):
    """Every row has stopped (diverged or converged): record the frozen state for the remaining steps."""
    B, N = st["x"].shape
    zeros = st["x"].new_zeros(B, N)
    for _ in range(remaining):
        fs.append(st["f"].clone())
        evals.append(0)
        row_evals.append(torch.zeros(B, dtype=torch.long))
        if record_vectors:
            xs.append(st["x"].clone())
            gs.append(st["g"].clone())
            ds.append(zeros)
            als.append(zeros)
        ops.append(None)
        for key in extras:
            extras[key].append(torch.zeros_like(extras[key][-1]))
    if not record_vectors:
        xs.append(st["x"].clone())
        gs.append(st["g"].clone())
        ds.append(zeros)
        als.append(zeros)
