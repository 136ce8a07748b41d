"""The step safeguard: a learned step is taken only where it lowers f enough (Armijo), else shortened.

Safe-L2O (Heaton et al., arXiv 2003.01880) wraps a learned update in a cheap test with a conventional
fallback; here the test is Armijo's sufficient decrease on the step actually taken, s:

    f(x − t·s) ≤ f(x) − c1 · t · gᵀs,   t = 1, ½, ¼, …

A step that is not a descent direction (gᵀs ≤ 0) is first replaced by ``fallback`` (the quasi-Newton
direction H g, a descent direction whenever H ≻ 0). A non-finite f or ∇f at a trial point fails the test,
so a step that leaves the finite range is shortened like any other. Rows where no trial passes stay where
they are (t = 0). Every extra evaluation is counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


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

    def step_size(self, alpha: torch.Tensor) -> torch.Tensor:
        """The element-wise step size actually taken for a learned step α ⊙ d (x_new = x − size ⊙ d)."""
        return torch.where(self.replaced.unsqueeze(-1), torch.ones_like(alpha), alpha) * self.t.unsqueeze(-1)


def _accept(f_try, g_try, f, gs, t, c1):
    # Below the rounding level of f a decrease cannot be measured: there a step that does not raise f by
    # more than rounding is accepted (otherwise a converged row would halve 30 times every step).
    noise = 8 * torch.finfo(f.dtype).eps * f.abs()
    decrease = f_try <= f - c1 * t * gs
    flat = (c1 * t * gs <= noise) & (f_try <= f + noise)
    return torch.isfinite(f_try) & torch.isfinite(g_try).all(-1) & (decrease | flat)


def armijo_step(objective, x: torch.Tensor, f: torch.Tensor, g: torch.Tensor, s: torch.Tensor,
                fallback: torch.Tensor, *, c1: float = 1e-4, max_halvings: int = 30) -> SafeStep:
    """Take x − s where Armijo holds; otherwise the fallback direction and/or halved steps (batched).

    Gradients flow through the accepted step (the accepted fractions are constants), so meta-training can
    run through the safeguard.
    """
    gs = (g * s).sum(-1)
    replaced = ~(gs > 0)
    if bool(replaced.any()):
        s = torch.where(replaced.unsqueeze(-1), fallback, s)
        gs = (g * s).sum(-1)
    gs_c = gs.detach()
    one = torch.ones_like(f)
    f_try, g_try = objective.value_and_grad(x - s)
    ok = _accept(f_try.detach(), g_try.detach(), f.detach(), gs_c, one, c1)
    evals = 1
    if bool(ok.all()):
        return SafeStep(x - s, f_try, g_try, s, one, replaced, replaced.clone(), evals)
    t = one.clone()
    done = ok.clone()
    with torch.no_grad():
        xd, sd, fd = x.detach(), s.detach(), f.detach()
        for _ in range(max_halvings):
            t = torch.where(done, t, 0.5 * t)
            ft, gt = objective.value_and_grad(xd - t.unsqueeze(-1) * sd)
            evals += 1
            done = done | _accept(ft, gt, fd, gs_c, t, c1)
            if bool(done.all()):
                break
    t = torch.where(done, t, torch.zeros_like(t))
    step = t.unsqueeze(-1) * s
    f_new, g_new = objective.value_and_grad(x - step)
    evals += 1
    fired = replaced | (t < 1)
    return SafeStep(x - step, f_new, g_new, step, t, replaced, fired, evals)
