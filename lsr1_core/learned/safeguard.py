"""The step safeguard: a learned step is taken only where it lowers f enough (Armijo), else shortened.

Safe-L2O (Heaton et al., arXiv 2003.01880) wraps a learned update in a cheap test with a conventional
fallback; here the test is Armijo's sufficient decrease on the step actually taken, s:

    f(x − t·s) ≤ f(x) − c1 · t · gᵀs,   t = 1, ½, ¼, …

A step that is not a descent direction (gᵀs ≤ 0) is first replaced by ``fallback`` (the quasi-Newton
direction H g, a descent direction whenever H ≻ 0). A non-finite f or ∇f at a trial point fails the test,
so a step that leaves the finite range is shortened like any other. Rows where no trial passes stay where
they are (t = 0). Every extra evaluation is counted.

Lengthening (``grow`` > 0): a full step that passed but along which f still falls steeply — the slope at the
new point is still at least ``STEEP`` (Wolfe's c2 = 0.9) of the slope at x, so the model's curvature along the
step was far too large (or unmeasured, e.g. its pair was skipped) — is extrapolated, as the bracketing phase of
a strong-Wolfe search does: trials t ← GROWTH·t, each kept only where it passes Armijo and lowers f below the
best point so far; it stops at the first trial that does not, or where the slope is no longer steep. (A fixed
factor rather than cubic extrapolation: along a nearly linear stretch, the only place this runs, the cubic's
minimiser is near-degenerate and its branch flips with rounding, which broke invariance to f → c·f.) Every guarantee of the plain search holds (the accepted point
passes Armijo and f never rises); only rows whose full step was accepted are ever lengthened.

In inference (no gradient wanted through the step) the value and gradient of the accepted trial are kept, so
a shortened or lengthened step costs no evaluation beyond its trials.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rowops import row_dot, row_max_abs, rows_finite

STEEP = 0.9  # lengthen a step while the slope at its end is still ≥ STEEP × the slope at its start (Wolfe's c2)
MAX_HALVINGS = 30  # the plain search's halvings (default of armijo_step, qn_step and paper_step)
EXTEND_TRIALS = 30  # the recovery's interpolated trials after the halvings
GROWTH = 4.0  # each lengthening trial multiplies the step by this
BACKTRACK_MIN = 0.1  # an interpolating backtrack shortens a step by at most 10× per trial (0.01 measured worse)
WOLFE_C2 = 0.9  # the strong-Wolfe search's curvature constant (torch.optim.LBFGS's and scipy's for quasi-Newton)
WOLFE_EVALS = 25  # at most this many trials per strong-Wolfe search (torch.optim.LBFGS's max_ls + 1)

@dataclass
class SafeStep:
    x: torch.Tensor          # (B, N) accepted point
    f: torch.Tensor          # (B,)
    g: torch.Tensor          # (B, N)
    step: torch.Tensor       # (B, N) the step taken: x_new = x − step
    t: torch.Tensor          # (B,) the accepted fraction of the (possibly replaced) step
    replaced: torch.Tensor   # (B,) bool: the learned step was not a descent direction and was replaced
    fired: torch.Tensor      # (B,) bool: the learned step was changed in any way
    evals: int               # objective evaluations used, the first trial included
    extended: torch.Tensor | None = None  # (B,) bool: accepted only in the extended search (after the halvings)
    null: torch.Tensor | None = None      # (B,) bool: (extended search on) the accepted trial rounds back to x
    grown: torch.Tensor | None = None     # (B,) bool: the full step was lengthened (t > 1)

    def step_size(self, alpha: torch.Tensor) -> torch.Tensor:
        """The element-wise step size actually taken for a learned step α ⊙ d (x_new = x − size ⊙ d); expanded
        from one element per row where α is one expanded element (the untrained step)."""
        if alpha.dim() == 2 and all(st == 0 for st in alpha.stride()):
            a = alpha[:, :1]
            return (torch.where(self.replaced.unsqueeze(-1), torch.ones_like(a), a) * self.t.unsqueeze(-1)).expand(
                alpha.shape)
        return torch.where(self.replaced.unsqueeze(-1), torch.ones_like(alpha), alpha) * self.t.unsqueeze(-1)


def _accept(f_try, g_try, f, gs, t, c1):
    # Below the rounding level of f a decrease cannot be measured: there a step that does not raise f by
    # more than rounding is accepted (otherwise a converged row would halve 30 times every step).
    noise = 8 * torch.finfo(f.dtype).eps * f.abs()
    decrease = f_try <= f - c1 * t * gs
    flat = (c1 * t * gs <= noise) & (f_try <= f + noise)
    return torch.isfinite(f_try) & rows_finite(g_try) & (decrease | flat)


def _interpolated(t, f_t, f, gs, lo: float = 1e-3):
    """The next trial of a backtracking search (Nocedal & Wright §3.5): the minimiser of the quadratic through
    φ(0) = f, φ'(0) = −gᵀs and φ(t) = f_t, kept within [lo·t, ½·t] (lo·t where φ(t) is not finite). The recovery
    uses lo = 10⁻³; the interpolating backtrack BACKTRACK_MIN."""
    curv = f_t - f + t * gs
    tq = gs * t * t / (2 * curv.clamp_min(torch.finfo(t.dtype).tiny))
    tq = torch.where(torch.isfinite(f_t) & (curv > 0), tq, lo * t)
    return torch.minimum(torch.maximum(tq, lo * t), 0.5 * t)


def _lengthen(objective, xd, sd, fd, gs, t, f_t, g_t, rows, c1: float, grow: int):
    """Extrapolate the accepted full steps of ``rows`` while f keeps falling steeply (see the module docstring).
    Returns (t, f, g, grown, evals) with f and g at each row's final point."""
    evals = 0
    grown = torch.zeros_like(rows)
    slope = -row_dot(g_t, sd)  # φ'(t) of φ(t) = f(x − t s); φ'(0) = −gs < 0
    steep = rows & (slope <= -STEEP * gs) & (gs > 0)
    for _ in range(grow):
        if not bool(steep.any()):
            break
        t_new = torch.where(steep, GROWTH * t, t)
        f_new, g_new = objective.value_and_grad(xd - t_new.unsqueeze(-1) * sd)
        evals += 1
        ok = steep & _accept(f_new, g_new, fd, gs, t_new, c1) & (f_new < f_t)
        slope_new = -row_dot(g_new, sd)
        t = torch.where(ok, t_new, t)
        f_t = torch.where(ok, f_new, f_t)
        g_t = torch.where(ok.unsqueeze(-1), g_new, g_t)
        slope = torch.where(ok, slope_new, slope)
        grown = grown | ok
        steep = ok & (slope <= -STEEP * gs)
    return t, f_t, g_t, grown, evals


def armijo_step(objective, x: torch.Tensor, f: torch.Tensor, g: torch.Tensor, s: torch.Tensor,
                fallback: torch.Tensor, *, c1: float = 1e-4, max_halvings: int = MAX_HALVINGS, extend: int = 0,
                grow: int = 0, backtrack: str = "halve", first: tuple | None = None) -> SafeStep:
    """Take x − s where Armijo holds; otherwise the fallback direction and/or halved steps (batched).

    ``extend`` > 0: rows that no halving satisfied get up to that many more trials of a backtracking search
    with quadratic interpolation (each trial shortens the step 2–1000×), so a step whose length is off by many
    orders of magnitude — a curvature estimate from a nearly linear stretch — is still shortened to one that
    lowers f; such rows are marked ``extended``. In this mode a trial point that rounds back to x itself (no
    shorter step can do better: the row has converged to rounding, or its step is below x's rounding) is
    accepted (where the test does not accept it already) and marked ``null``, instead of spending every
    remaining trial on the same point. With ``extend``
    = 0 (the default) the search is the plain halving it always was. ``backtrack="interpolate"`` shortens by
    quadratic interpolation within [0.1·t, 0.5·t] instead of halving (the qn form's default since 2026-12-06: one
    or two trials where halving needed five). ``grow`` > 0 lengthens full steps along
    which f still falls steeply by up to that many extrapolation trials (module docstring); 0 never lengthens.

    Gradients flow through the accepted step (the accepted fractions are constants), so meta-training can
    run through the safeguard. ``first``: (f, ∇f) at x − s where the caller has them already (the first trial,
    then not evaluated again nor counted).
    """
    gs = row_dot(g, s)
    replaced = ~(gs > 0)
    if bool(replaced.any()):
        s = torch.where(replaced.unsqueeze(-1), fallback, s)
        gs = row_dot(g, s)
    gs_c = gs.detach()
    one = torch.ones_like(f)
    xd, sd, fd = x.detach(), s.detach(), f.detach()

    def same(t):  # (extended mode) rows whose trial point rounds back to x
        if extend <= 0:
            return torch.zeros_like(fd, dtype=torch.bool)
        return ((xd - t.unsqueeze(-1) * sd) == xd).all(-1)

    f_try, g_try = objective.value_and_grad(x - s) if first is None else first
    ok = _accept(f_try.detach(), g_try.detach(), fd, gs_c, one, c1)
    null = same(one) & ~ok  # a point that rounds back to x and that the test itself does not accept
    full = ok.clone()
    ok = ok | null
    evals = 1 if first is None else 0
    differentiable = torch.is_grad_enabled() and (x.requires_grad or s.requires_grad)
    if bool(ok.all()) and (grow <= 0 or differentiable):
        return SafeStep(x - s, f_try, g_try, s, one, replaced, replaced.clone() | null, evals,
                        torch.zeros_like(ok), null, torch.zeros_like(ok))
    t = one.clone()
    done = ok.clone()
    extended = torch.zeros_like(done)
    # f and ∇f at each row's accepted point so far (the point x itself for null rows)
    f_acc = torch.where(null, fd, f_try.detach())
    g_acc = torch.where(null.unsqueeze(-1), g.detach(), g_try.detach())

    def trial(t, done, null):
        """Evaluate the rows' trial points x − t·s, keep f and ∇f of the rows it settles (x's own for a null
        row); returns f there and the updated done / null masks."""
        nonlocal f_acc, g_acc
        ft, gt = objective.value_and_grad(xd - t.unsqueeze(-1) * sd)
        acc = _accept(ft, gt, fd, gs_c, t, c1)
        hit = same(t) & ~done & ~acc
        acc = acc & ~done
        f_acc = torch.where(acc, ft, torch.where(hit, fd, f_acc))
        g_acc = torch.where(acc.unsqueeze(-1), gt, torch.where(hit.unsqueeze(-1), g.detach(), g_acc))
        return ft, done | acc | hit, null | hit

    with torch.no_grad():
        last = f_try.detach()
        for _ in range(max_halvings):
            if bool(done.all()):
                break
            shorter = 0.5 * t if backtrack == "halve" else _interpolated(t, last, fd, gs_c, BACKTRACK_MIN)
            t = torch.where(done, t, shorter)
            last, done, null = trial(t, done, null)
            evals += 1
        if extend > 0 and not bool(done.all()):
            halved = done.clone()
            for _ in range(extend):
                t = torch.where(done, t, _interpolated(t, last, fd, gs_c))
                ft, done_now, null = trial(t, done, null)
                evals += 1
                last = torch.where(done_now, last, ft)
                done = done_now
                if bool(done.all()):
                    break
            extended = done & ~halved & ~null
        grown = torch.zeros_like(done)
        if grow > 0 and not differentiable:
            t, f_acc, g_acc, grown, more = _lengthen(objective, xd, sd, fd, gs_c, t, f_acc, g_acc, full, c1, grow)
            evals += more
    t = torch.where(done, t, torch.zeros_like(t))
    # a row that does not move takes the zero step, also where s is not finite (0·NaN would be NaN)
    step = torch.where((t > 0).unsqueeze(-1), t.unsqueeze(-1) * s, torch.zeros_like(s))
    if differentiable:
        # gradients flow through the accepted step: evaluate it again on the graph
        f_new, g_new = objective.value_and_grad(x - step)
        evals += 1
    else:
        f_new = torch.where(done, f_acc, fd)
        g_new = torch.where(done.unsqueeze(-1), g_acc, g.detach())
    fired = replaced | (t < 1) | null | grown
    return SafeStep(x - step, f_new, g_new, step, t, replaced, fired, evals, extended, null, grown)


def wolfe_step(objective, x: torch.Tensor, f: torch.Tensor, g: torch.Tensor, s: torch.Tensor,
               fallback: torch.Tensor, *, c1: float = 1e-4, c2: float = WOLFE_C2, max_evals: int = WOLFE_EVALS,
               max_halvings: int = MAX_HALVINGS, extend: int = 0, backtrack: str = "interpolate") -> SafeStep:
    """A strong-Wolfe line search on the step s (``backtrack="wolfe"``), with :func:`armijo_step` behind it.

    The unit step is tried first; where it passes Armijo but f still falls steeply at its end the search
    extrapolates (cubic, up to 10× per trial), where it fails it zooms (cubic interpolation inside the bracket)
    until |φ'(t)| ≤ c2·|φ'(0)| — the batched port of torch.optim.LBFGS's search
    (:func:`~lsr1_core.solvers.lbfgs.strong_wolfe`). So a step can grow where the model was unsure (its
    curvature along s too large or unmeasured) and every accepted pair has pᵀq ≥ (1 − c2)·|gᵀs|·t > 0: curvature
    the BFGS fallback can always use. A step that is not a descent direction is first replaced by ``fallback``,
    as in :func:`armijo_step`. Rows where the search ends without a point that passes Armijo with a finite f
    and ∇f (it ran out of trials, or its bracket shrank to nothing) get :func:`armijo_step`'s search instead
    (halvings, then the recovery's ``extend`` trials), so every guarantee of the plain search holds: the
    accepted point passes Armijo, f never rises, nothing non-finite is accepted. Every evaluation is counted.
    With a gradient wanted through the step, the accepted fraction is a constant and the step is evaluated
    again on the graph (one more evaluation), as :func:`armijo_step` does.
    """
    from ..solvers.lbfgs import strong_wolfe

    gs = row_dot(g, s)
    replaced = ~(gs > 0)
    if bool(replaced.any()):
        s = torch.where(replaced.unsqueeze(-1), fallback, s)
        gs = row_dot(g, s)
    xd, sd, fd, gd = x.detach(), s.detach(), f.detach(), g.detach()
    with torch.no_grad():
        # the zoom ends where the bracket's two ends differ by less than x's rounding (scale-free: relative to x)
        def rounding():
            return 4 * torch.finfo(xd.dtype).eps * row_max_abs(xd)

        first = []  # (f, ∇f) at the unit step, which the plain search below would try first
        t, f_t, g_t, evals, _ = strong_wolfe(objective, xd, sd, fd, gd, torch.ones_like(fd), c1=c1, c2=c2,
                                             max_evals=max_evals, tol_change=rounding, first=first)
        good = (t > 0) & torch.isfinite(t) & _accept(f_t, g_t, fd, gs.detach(), t, c1) & (f_t <= fd)
    differentiable = torch.is_grad_enabled() and (x.requires_grad or s.requires_grad)
    if not bool(good.all()):
        # the plain search for the rows the strong-Wolfe search left without an acceptable point (its first trial,
        # the unit step, is the strong-Wolfe search's first: not evaluated again)
        rest = armijo_step(objective, xd, fd, gd, sd, fallback.detach(), c1=c1, max_halvings=max_halvings,
                           extend=extend, backtrack=backtrack, first=first[0])
        evals += rest.evals
        t = torch.where(good, t, rest.t)
        f_t = torch.where(good, f_t, rest.f)
        g_t = torch.where(good.unsqueeze(-1), g_t, rest.g)
        extended = ~good & rest.extended
        null = ~good & rest.null
    else:
        extended = null = torch.zeros_like(good)
    moved = t > 0
    step = t.unsqueeze(-1) * s if bool(moved.all()) else torch.where(moved.unsqueeze(-1), t.unsqueeze(-1) * s,
                                                                      torch.zeros_like(s))
    if differentiable:
        f_new, g_new = objective.value_and_grad(x - step)
        evals += 1
    else:
        f_new, g_new = f_t, g_t
    grown = good & (t > 1)
    fired = replaced | (t != 1) | null
    return SafeStep(x - step, f_new, g_new, step, t, replaced, fired, evals, extended, null, grown)
