"""Meta-learning in evaluations: a budget meta-loss, exact per-problem evaluation counts, and antithetic ES.

Three pieces for issue 22 ("meta-training that pays"):

* :func:`budget_log_gap` — the meta-loss in **evaluations**, not iterations: for each evaluation budget E, the
  best gap f − f* a run reached at an iterate whose cumulative evaluation count is ≤ E, in log10, averaged over
  budgets and problems. A term whose gap is at (or below) the floor is replaced by the floor's constant value: it
  carries no gradient and cannot be lowered further, so it neither rewards nor punishes (it is "dropped" from
  what can be learned), while a run that reaches the floor with fewer evaluations still scores lower at the small
  budgets. Differentiable wherever f is (the best iterate within a budget is selected by a masked minimum, so
  the gradient flows to that iterate's f). :func:`budget_area` is the same with every integer budget 1 … E, i.e.
  the area under the best-so-far log-gap curve over cumulative evaluations, divided by E.
* :class:`CountingObjective` and :func:`run_counted` — how many evaluations *each problem* of a batch paid. A
  batched line search evaluates all rows in lock step, so the solvers' own ``Trace.evals`` charges every row the
  batch's maximum; here a row pays one evaluation each time it is evaluated at a point other than the last
  point it was evaluated at (rows that have finished their search are re-evaluated at the same point and pay
  nothing; a re-evaluation at a fresh point — a probe, a trial step — costs one). That is what a solver running
  that problem alone would pay, up to caching of non-consecutive repeats.
* :func:`es_gradient` — antithetic evolution strategies for a small parameter vector θ (e.g. log step
  multiplier, log H₀ scale): ĝ = (1/P) Σ_i [L(θ + σε_i, s_i) − L(θ − σε_i, s_i)] / (2σ) · ε_i, with common random
  numbers (the same problem seed s_i for both members of a pair), so the problem-to-problem noise cancels in the
  difference. It estimates the gradient of the Gaussian-smoothed loss E_ε L(θ + σε), which exists where the
  safeguard's branches make L piecewise. With ``orthogonal=True`` (the default) the directions of each block of
  d pairs are an orthonormal frame scaled by √d (Choromanski et al. 2018), which removes the chi-square noise of
  Gaussian directions: for a smooth L and d pairs, ĝ is a central difference in a random rotated frame.
  :func:`train_scalars` fits θ by Adam on these estimates over a family's training sampler and validates every
  iteration on fixed problems.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..errors import LSR1Error
from ..objectives.base import Objective

DEFAULT_BUDGETS = (16, 32, 64, 128)


# --------------------------------------------------------------------------------------------------------------
# The meta-loss in evaluations
# --------------------------------------------------------------------------------------------------------------

def cumulative_evals(evals: torch.Tensor, steps: int, batch: int, start_evals: float = 0.0) -> torch.Tensor:
    """(T+1, B) cumulative evaluations at iterates 0 … T from per-step counts (T,) or (T, B).

    ``start_evals`` is what iterate 0 cost (e.g. 1 for f(x₀), ∇f(x₀))."""
    e = torch.as_tensor(evals)
    if e.dim() == 1:
        e = e.unsqueeze(1).expand(-1, batch)
    if e.dim() != 2 or e.shape != (steps, batch):
        raise LSR1Error(f"per-step evaluation counts must have shape ({steps},) or ({steps}, {batch}), got "
                        f"{tuple(e.shape)}")
    e = e.to(torch.float64)
    if bool((e < 0).any()) or not bool(torch.isfinite(e).all()):
        raise LSR1Error("evaluation counts must be finite and non-negative")
    zero = torch.full((1, batch), float(start_evals), dtype=torch.float64, device=e.device)
    return torch.cat([zero, float(start_evals) + e.cumsum(0)], 0)


def best_within_budgets(f: torch.Tensor, cum: torch.Tensor, budgets: Sequence[float]) -> torch.Tensor:
    """(len(budgets), B): the lowest f at an iterate whose cumulative count is ≤ each budget; iterate 0 always
    counts (a run that cannot afford a step keeps its start). Differentiable through the selected f."""
    if f.dim() != 2 or cum.shape != f.shape:
        raise LSR1Error(f"f must be (T+1, B) and the cumulative counts the same shape; got {tuple(f.shape)} and "
                        f"{tuple(cum.shape)}")
    b = torch.as_tensor([float(x) for x in budgets], dtype=torch.float64, device=f.device).view(-1, 1, 1)
    within = cum.to(f.device).unsqueeze(0) <= b  # (E, T+1, B)
    within[:, 0] = True
    ok = within & torch.isfinite(f).unsqueeze(0)
    ok[:, 0] = True
    big = torch.full_like(f, float("inf"))
    masked = torch.where(ok, f.unsqueeze(0).expand_as(ok), big.unsqueeze(0).expand_as(ok))
    return masked.min(dim=1).values


def budget_terms(f: torch.Tensor, evals: torch.Tensor, f_star, budgets: Sequence[float] = DEFAULT_BUDGETS, *,
                 floor: float = 1e-12, normalize: bool = True, start_evals: float = 0.0,
                 cumulative: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The terms of :func:`budget_log_gap`: ((E, B) log10 best gaps, (E, B) bool mask of the terms above the
    floor). See :func:`budget_log_gap` for the arguments."""
    if f.dim() != 2:
        raise LSR1Error(f"f must have shape (steps + 1, B), got {tuple(f.shape)}")
    T1, B = f.shape
    if not budgets:
        raise LSR1Error("give at least one evaluation budget")
    if any((not isinstance(x, (int, float))) or isinstance(x, bool) or not x > 0 for x in budgets):
        raise LSR1Error(f"budgets must be positive numbers, got {list(budgets)}")
    if not (isinstance(floor, (int, float)) and floor > 0 and math.isfinite(floor)):
        raise LSR1Error(f"floor must be a positive finite number, got {floor!r}")
    if cumulative:
        cum = torch.as_tensor(evals, dtype=torch.float64)
        if cum.dim() == 1:
            cum = cum.unsqueeze(1).expand(-1, B)
        if cum.shape != (T1, B):
            raise LSR1Error(f"cumulative counts must have shape ({T1},) or ({T1}, {B}), got {tuple(cum.shape)}")
    else:
        cum = cumulative_evals(evals, T1 - 1, B, start_evals)
    fs = torch.as_tensor(f_star, dtype=f.dtype, device=f.device)
    fs = fs.expand(B) if fs.dim() == 0 else fs.reshape(B)
    fs = fs.detach()
    best = best_within_budgets(f, cum, budgets)  # (E, B)
    gap = best - fs
    gap0 = (f[0] - fs).detach()
    if normalize:
        if bool((gap0 <= 0).any()):
            raise LSR1Error("normalize=True needs f(x₀) > f* on every problem (a start at the minimum has no gap "
                            "to close)")
        thresh = floor * gap0
        rel = gap / gap0
        value = torch.log10(torch.where(gap > thresh, rel, torch.full_like(rel, floor)))
    else:
        thresh = torch.full_like(gap0, floor)
        value = torch.log10(torch.where(gap > thresh, gap, torch.full_like(gap, floor)))
    above = (gap > thresh).detach()
    return value, above


def budget_log_gap(f: torch.Tensor, evals: torch.Tensor, f_star, budgets: Sequence[float] = DEFAULT_BUDGETS, *,
                   floor: float = 1e-12, normalize: bool = True, start_evals: float = 0.0,
                   cumulative: bool = False) -> torch.Tensor:
    """The meta-loss in evaluations: mean over budgets and problems of log10 of the best gap reached within
    each budget.

    f: (T+1, B) values at iterates 0 … T (differentiable or not).
    evals: per-step counts (T,) or (T, B) (``Trace.evals``, or :func:`run_counted`'s per-row counts), or, with
        ``cumulative=True``, cumulative counts at each iterate (T+1,) or (T+1, B).
    f_star: the minimum, a number or (B,).
    budgets: evaluation budgets E (an iterate counts for E when its cumulative count is ≤ E).
    floor: terms whose gap is ≤ floor (relative to the initial gap f₀ − f* when ``normalize``, else absolute)
        take the constant log10(floor): no gradient, nothing more to learn there.
    normalize: log10((f − f*)/(f₀ − f*)) — invariant to f → c·f, so problems of any scale weigh the same —
        instead of log10(f − f*).
    start_evals: what iterate 0 cost (added to every cumulative count; not used with ``cumulative``).
    Returns a 0-d tensor.
    """
    value, _ = budget_terms(f, evals, f_star, budgets, floor=floor, normalize=normalize, start_evals=start_evals,
                            cumulative=cumulative)
    return value.mean()


def budget_area(f: torch.Tensor, evals: torch.Tensor, f_star, max_evals: int, **kwargs) -> torch.Tensor:
    """Area under the best-so-far log10 gap over cumulative evaluations 1 … ``max_evals``, divided by
    ``max_evals``: :func:`budget_log_gap` with every integer budget."""
    if not isinstance(max_evals, int) or isinstance(max_evals, bool) or max_evals < 1:
        raise LSR1Error(f"max_evals must be a positive integer, got {max_evals!r}")
    return budget_log_gap(f, evals, f_star, budgets=tuple(range(1, max_evals + 1)), **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Per-problem evaluation counts
# --------------------------------------------------------------------------------------------------------------

class CountingObjective(Objective):
    """Wraps an objective and counts, per row, the evaluations at a point other than the row's last one.

    ``counts`` (B,) float64 holds the running totals (allocated on the first call). Anything not overridden is
    the wrapped objective's."""

    def __init__(self, base: Objective):
        self.base = base
        self.name = getattr(base, "name", "objective")
        self.dim, self.batch = getattr(base, "dim", None), getattr(base, "batch", None)
        self.convex = getattr(base, "convex", False)
        self.counts: torch.Tensor | None = None
        self._last: torch.Tensor | None = None

    def _count(self, x: torch.Tensor) -> None:
        xd = x.detach()
        if self.counts is None or self.counts.shape[0] != xd.shape[0]:
            self.counts = torch.ones(xd.shape[0], dtype=torch.float64)
        else:
            fresh = ~(xd == self._last).all(-1) if self._last.shape == xd.shape else torch.ones(
                xd.shape[0], dtype=torch.bool)
            self.counts = self.counts + fresh.cpu().to(torch.float64)
        self._last = xd.clone()

    def value(self, x):
        self._count(x)
        return self.base.value(x)

    def value_and_grad(self, x):
        self._count(x)
        return self.base.value_and_grad(x)

    def grad(self, x):
        return self.value_and_grad(x)[1]

    def hvp(self, x, v):
        return self.base.hvp(x, v)

    def hessian(self, x):
        return self.base.hessian(x)

    def minimizer(self):
        return self.base.minimizer()

    def min_value(self):
        return self.base.min_value()

    def check(self, x):
        self.base.check(x)


@dataclass
class CountedRun:
    """f (T+1, B) at the accepted iterates and cum (T+1, B) each row's cumulative evaluations there (the start
    and, for the qn form, its curvature probe included); trace is the solver's own Trace."""

    f: torch.Tensor
    cum: torch.Tensor
    trace: object = None


def run_counted(solver, objective: Objective, x0: torch.Tensor, steps: int, **run_kwargs) -> CountedRun:
    """:func:`~lsr1_core.solvers.run` with exact per-row evaluation counts (see :class:`CountingObjective`)."""
    from ..solvers import run

    counter = CountingObjective(objective)
    snaps: list[torch.Tensor] = []
    inner_reset, inner_step = solver.reset, solver.step

    def reset(obj, x):
        inner_reset(obj, x)
        snaps.clear()
        snaps.append(counter.counts.clone())

    def step(obj):
        info = inner_step(obj)
        snaps.append(counter.counts.clone())
        return info

    solver.reset, solver.step = reset, step
    try:
        run_kwargs.setdefault("record_vectors", False)
        run_kwargs.setdefault("keep_operators", False)
        trace = run(solver, counter, x0, steps, **run_kwargs)
    finally:
        del solver.reset, solver.step
    cum = torch.stack(snaps)
    T1 = trace.f.shape[0]
    if cum.shape[0] < T1:  # the run ended early (every row stopped): nothing more was paid
        cum = torch.cat([cum, cum[-1:].expand(T1 - cum.shape[0], -1)], 0)
    return CountedRun(f=trace.f.detach(), cum=cum[:T1], trace=trace)


def run_budget(solver, objective: Objective, x0: torch.Tensor, max_evals: float,
               max_steps: int | None = None) -> CountedRun:
    """Run ``solver`` until every row has paid more than ``max_evals`` evaluations (per-row counts, see
    :class:`CountingObjective`) or ``max_steps`` steps (default 4·max_evals) were taken.

    A lighter loop than :func:`~lsr1_core.solvers.run` for budget comparisons: no trace of vectors, no freezing
    (a row whose value is not finite simply never improves its best value again: :func:`best_within_budgets`
    ignores non-finite values). ``trace`` of the result is None."""
    counter = CountingObjective(objective)
    steps = int(max_steps if max_steps is not None else 4 * max_evals + 8)
    with torch.no_grad():
        solver.reset(counter, x0)
    fs, cums = [solver.state["f"].detach().clone()], [counter.counts.clone()]
    for _ in range(steps):
        if bool((counter.counts > max_evals).all()):
            break
        with torch.no_grad():
            solver.step(counter)
        fs.append(solver.state["f"].detach().clone())
        cums.append(counter.counts.clone())
    return CountedRun(f=torch.stack(fs), cum=torch.stack(cums), trace=None)


# --------------------------------------------------------------------------------------------------------------
# Antithetic evolution strategies
# --------------------------------------------------------------------------------------------------------------

@dataclass
class ESEstimate:
    grad: torch.Tensor            # (d,) the gradient estimate
    stderr: torch.Tensor          # (d,) standard error over the pairs (0 with one pair)
    loss: float                   # mean of L(θ ± σε) over all evaluations (≈ L(θ) + O(σ²))
    pairs: int
    per_pair: torch.Tensor = field(default=None)  # (P, d) each pair's estimate


def _directions(d: int, pairs: int, generator: torch.Generator, orthogonal: bool) -> torch.Tensor:
    eps = torch.randn(pairs, d, generator=generator, dtype=torch.float64)
    if not orthogonal:
        return eps
    out = []
    for start in range(0, pairs, d):
        G = torch.randn(d, d, generator=generator, dtype=torch.float64)
        Q, R = torch.linalg.qr(G)
        Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
        out.append(math.sqrt(d) * Q.T)  # rows: an orthonormal frame scaled so that E[εεᵀ] = I
    return torch.cat(out, 0)[:pairs]


def es_gradient_with_stats(loss_fn: Callable[[torch.Tensor, int], float], theta, sigma: float, pairs: int,
                           generator: torch.Generator, *, orthogonal: bool = True) -> ESEstimate:
    """Antithetic ES estimate of ∇_θ E_ε L(θ + σε) with common random numbers; see :func:`es_gradient`."""
    theta = torch.as_tensor(theta, dtype=torch.float64).detach().reshape(-1)
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise LSR1Error(f"sigma must be a positive finite number, got {sigma!r}")
    if not isinstance(pairs, int) or isinstance(pairs, bool) or pairs < 1:
        raise LSR1Error(f"pairs must be a positive integer, got {pairs!r}")
    d = theta.numel()
    eps = _directions(d, pairs, generator, orthogonal)
    seeds = torch.randint(0, 2 ** 31 - 1, (pairs,), generator=generator).tolist()
    per, losses = [], []
    for i in range(pairs):
        lp = float(loss_fn(theta + sigma * eps[i], int(seeds[i])))
        lm = float(loss_fn(theta - sigma * eps[i], int(seeds[i])))
        if not (math.isfinite(lp) and math.isfinite(lm)):
            raise LSR1Error(f"the loss was not finite at θ ± σε for pair {i} (θ = {theta.tolist()}, σ = {sigma}, "
                            f"ε = {eps[i].tolist()}): {lp}, {lm}")
        per.append((lp - lm) / (2 * sigma) * eps[i])
        losses += [lp, lm]
    per_t = torch.stack(per)
    grad = per_t.mean(0)
    stderr = per_t.std(0, unbiased=True) / math.sqrt(pairs) if pairs > 1 else torch.zeros_like(grad)
    return ESEstimate(grad=grad, stderr=stderr, loss=sum(losses) / len(losses), pairs=pairs, per_pair=per_t)


def es_gradient(loss_fn: Callable[[torch.Tensor, int], float], theta, sigma: float, pairs: int,
                generator: torch.Generator, *, orthogonal: bool = True) -> torch.Tensor:
    """Antithetic evolution-strategies gradient of a small parameter vector θ (d,).

    ``loss_fn(theta, seed)`` returns a number; ``seed`` chooses the problems (and any other randomness), and is
    the same for θ + σε and θ − σε (common random numbers), drawn from ``generator`` per pair, as are the
    directions ε. Returns ĝ = (1/P) Σ_i [L(θ + σε_i) − L(θ − σε_i)]/(2σ)·ε_i (d,), an unbiased estimate of the
    gradient of the σ-smoothed loss; for a smooth loss it matches ∇L up to O(σ²). ``orthogonal``: directions in
    blocks of d orthogonal vectors of length √d (lower variance); False: i.i.d. N(0, I)."""
    return es_gradient_with_stats(loss_fn, theta, sigma, pairs, generator, orthogonal=orthogonal).grad


def central_difference(loss_fn: Callable[[torch.Tensor, int], float], theta, h: float, seed: int) -> torch.Tensor:
    """Central finite differences of ``loss_fn(·, seed)`` along each coordinate (d,), for checking ES."""
    theta = torch.as_tensor(theta, dtype=torch.float64).detach().reshape(-1)
    out = torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = h
        out[i] = (float(loss_fn(theta + e, seed)) - float(loss_fn(theta - e, seed))) / (2 * h)
    return out


@dataclass
class ScalarTraining:
    """What :func:`train_scalars` did: θ per iteration (iteration 0 = the start), the training loss estimate and
    validation loss of each, the best θ by validation and where it was, the ES gradients and the time."""

    names: list[str]
    thetas: list[list[float]]
    train_loss: list[float]
    val_loss: list[float]
    grads: list[list[float]]
    best_iteration: int
    best_theta: list[float]
    seconds: float

    def to_dict(self) -> dict:
        return {"names": self.names, "thetas": self.thetas, "train_loss": self.train_loss,
                "val_loss": self.val_loss, "grads": self.grads, "best_iteration": self.best_iteration,
                "best_theta": self.best_theta, "seconds": self.seconds}


def train_scalars(loss_fn: Callable[[torch.Tensor, int], float], val_fn: Callable[[torch.Tensor], float],
                  theta0, *, names: Sequence[str] | None = None, iterations: int = 20, sigma: float = 0.1,
                  pairs: int = 2, lr: float = 0.1, seed: int = 0, orthogonal: bool = True,
                  bounds: tuple[float, float] = (-3.0, 3.0),
                  log: Callable[[str], None] | None = None) -> ScalarTraining:
    """Fit a few scalars θ by Adam on antithetic-ES gradients of a training loss, validating every iteration.

    ``loss_fn(theta, seed)``: the meta-loss on training problems drawn with ``seed`` (e.g. :func:`budget_log_gap`
    of a run with step_scale = e^θ₀ on a fresh batch of the family's training sampler); ``val_fn(theta)``: the
    same meta-loss on fixed validation problems. θ is kept in ``bounds`` (each coordinate). Returns the history
    and the best θ by validation (iteration 0, the start, included: a run that does not help keeps it)."""
    theta = torch.as_tensor(theta0, dtype=torch.float64).detach().clone().reshape(-1)
    names = list(names) if names is not None else [f"theta{i}" for i in range(theta.numel())]
    if len(names) != theta.numel():
        raise LSR1Error(f"{len(names)} names for {theta.numel()} parameters")
    if not isinstance(iterations, int) or iterations < 0:
        raise LSR1Error(f"iterations must be a non-negative integer, got {iterations!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise LSR1Error(f"lr must be positive, got {lr!r}")
    gen = torch.Generator().manual_seed(int(seed))
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    b1, b2, adam_eps = 0.9, 0.999, 1e-8
    t0 = time.perf_counter()
    thetas, train, val, grads = [theta.tolist()], [float("nan")], [float(val_fn(theta))], []
    if log:
        log(f"[es] it 0  θ = {[round(t, 4) for t in theta.tolist()]}  val {val[-1]:.4f}")
    for it in range(1, iterations + 1):
        est = es_gradient_with_stats(loss_fn, theta, sigma, pairs, gen, orthogonal=orthogonal)
        g = est.grad
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = lr * (m / (1 - b1 ** it)) / ((v / (1 - b2 ** it)).sqrt() + adam_eps)
        theta = (theta - step).clamp(bounds[0], bounds[1])
        thetas.append(theta.tolist())
        train.append(est.loss)
        grads.append(g.tolist())
        val.append(float(val_fn(theta)))
        if log:
            log(f"[es] it {it}  θ = {[round(t, 4) for t in theta.tolist()]}  train {est.loss:.4f}  "
                f"val {val[-1]:.4f}  ĝ = {[round(x, 4) for x in g.tolist()]}")
    best = min(range(len(val)), key=lambda i: (val[i], i))
    return ScalarTraining(names=names, thetas=thetas, train_loss=train, val_loss=val, grads=grads,
                          best_iteration=best, best_theta=thetas[best], seconds=time.perf_counter() - t0)
