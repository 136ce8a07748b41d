"""The paper's update rule (Algorithm 1, Eq. 7-8; ``LSR1Config(form="paper")``) behind the :class:`UpdateRule`
interface of :mod:`lsr1_core.learned.rules`.

One step k: features of (x, p, d, g, q) → v_k, α_k; buffer ← last L of (buffer, v_k); d_k = B̃_k g_{k-1} with
B̃_k = I + Σ v vᵀ; x_k = x_{k-1} − α_k ⊙ d_k; then p, q and the secant residual ‖p_k − B̃_k q_k‖² of the operator
that made the step. :func:`propose`, :func:`advance`, :func:`lsr1_step` and :func:`paper_step` are the functions
this file always held (they moved here from ``learned.model``); :class:`PaperRule` is the interface over them.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .model import LSR1Config, LSR1Net, LSR1Operator, LSR1State
from .rules import LSR1StepOut, StepOut, UpdateRule, register
from .safeguard import armijo_step


class Proposal(NamedTuple):
    """What :func:`propose` returns: the proposed iterate, the new vector v, the step sizes α, the direction
    d = B̃g, the buffer W (B, l, N) and the operator B̃."""
    x: torch.Tensor
    v: torch.Tensor
    alpha: torch.Tensor
    d: torch.Tensor
    W: torch.Tensor
    operator: "LSR1Operator"


def _features(state: LSR1State, cfg: LSR1Config) -> torch.Tensor:
    pool = {"x": state.x, "p": state.p, "d": state.Bq if cfg.bq_feature else state.d, "g": state.g, "q": state.q}
    feats = torch.stack([pool[name] for name in cfg.features], dim=-1)
    return feats.detach() if cfg.detach_features else feats


def _operator(cfg: LSR1Config, W: torch.Tensor, scale=None) -> LSR1Operator:
    full = W.shape[1] >= cfg.memory
    return LSR1Operator(W, identity=not (cfg.drop_identity_when_full and full), rescale=cfg.rescale_direction,
                        scale=scale)


def propose(net: LSR1Net, state: LSR1State) -> Proposal:
    """Lines 3-10 of Algorithm 1: features → v, α → buffer → d = B̃ g → proposed x.

    Evaluating f and ∇f at the proposed x is the caller's.
    """
    cfg = net.config
    v, alpha = net(_features(state, cfg))
    W = torch.cat([state.W, v.unsqueeze(1)], dim=1)[:, -cfg.memory:]
    op = _operator(cfg, W)
    d = op.matvec(state.g)
    return Proposal(state.x - alpha * d, v, alpha, d, W, op)


def advance(state: LSR1State, x, f, g, d, W, op) -> tuple[LSR1State, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Line 11: p, q and the secant residual of the operator that made the step (Eq. 8)."""
    p = x - state.x
    q = g - state.g
    Bq = op.matvec(q)
    r = p - Bq
    secant = (r * r).sum(-1)
    secant_rel = r.detach().norm(dim=-1) / p.detach().norm(dim=-1).clamp_min(1e-30)
    new = LSR1State(x=x, f=f, g=g, p=p, d=d, q=q, W=W, Bq=Bq, k=state.k + 1)
    return new, secant, secant_rel, Bq


@register
class PaperRule(UpdateRule):
    """Algorithm 1. The training step (``differentiable=True``) is the plain step: propose, one evaluation,
    advance; the inference step scales α by ``step_scale`` and applies the Armijo safeguard where the config asks
    for it."""

    name = "paper"
    scale_free = False
    splittable = True

    def init(self, net, objective, x0, f0=None, g0=None) -> LSR1State:
        """Algorithm 1, line 1: p_0 = x_0, q_0 = d_0 = g_0, an empty buffer."""
        if f0 is None or g0 is None:
            f0, g0 = objective.value_and_grad(x0)
        return LSR1State.initial(x0, f0, g0)

    def init_heads(self, net: LSR1Net) -> None:
        # Start close to B̃ = I (plain gradient steps of size γ1): small generated vectors.
        net.vector_generator.fc2.weight.mul_(0.1)
        net.vector_generator.fc2.bias.zero_()

    @property
    def deferred(self) -> bool:
        return self.config.safeguard is None

    def propose(self, net, state, step_scale: float = 1.0) -> Proposal:
        """Lines 3-10 with the step sizes multiplied by ``step_scale``."""
        prop = propose(net, state)
        if step_scale == 1.0:
            return prop
        alpha = prop.alpha * step_scale
        return prop._replace(x=state.x - alpha * prop.d, alpha=alpha)

    def advance(self, net, state, x, f, g, d, W, operator) -> tuple[LSR1State, StepOut]:
        """Line 11 at the evaluated point x (f, g) of a step made with d, W and ``operator`` (one evaluation; the
        step size is the caller's, ``step_size`` None)."""
        new, secant, secant_rel, _ = advance(state, x, f, g, d, W, operator)
        return new, StepOut(direction=d, step_size=None, operator=operator, evals=1,
                            vector=W[:, -1] if W.shape[1] else torch.zeros_like(x), secant=secant,
                            secant_rel=secant_rel)

    def step(self, net, state, objective, *, differentiable: bool, detach_gradient: bool = False,
             step_scale: float = 1.0) -> tuple[LSR1State, StepOut]:
        prop = propose(net, state)
        v, d, W, op = prop.v, prop.d, prop.W, prop.operator
        safeguard = None
        if differentiable:  # the training step: Algorithm 1 as it stands (lsr1_step)
            x_new, alpha = prop.x, prop.alpha
            f, g = objective.value_and_grad(x_new)
            evals = 1
        else:
            alpha = prop.alpha * step_scale
            if net.config.safeguard == "armijo":
                safe = armijo_step(objective, state.x, state.f, state.g, alpha * d, d)
                x_new, f, g, evals = safe.x, safe.f, safe.g, safe.evals
                alpha, safeguard = safe.step_size(alpha), safe.fired
            else:
                x_new = state.x - alpha * d
                f, g = objective.value_and_grad(x_new)
                evals = 1
        if detach_gradient:
            g = g.detach()
        new, secant, secant_rel, _ = advance(state, x_new, f, g, d, W, op)
        return new, StepOut(direction=d, step_size=alpha, operator=op, evals=evals, vector=v, secant=secant,
                            secant_rel=secant_rel, safeguard=safeguard)

    def operator(self, net, state) -> LSR1Operator:
        return _operator(net.config, state.W, scale=state.gamma)


def lsr1_step(net: LSR1Net, state: LSR1State, objective, *, detach_gradient: bool = False) -> tuple[LSR1State, LSR1StepOut]:
    """One differentiable L-SR1 step. Gradients flow into ``net`` unless called under no_grad."""
    new, out = PaperRule(net.config).step(net, state, objective, differentiable=True, detach_gradient=detach_gradient)
    return new, out.legacy()


def paper_step(net: LSR1Net, state: LSR1State, objective, step_scale: float = 1.0) -> tuple[LSR1State, LSR1StepOut, int]:
    """Algorithm 1's step with ``step_scale`` and, when the config asks for it, the Armijo safeguard.

    Returns the new state, the step's output (``alpha``: the step size actually taken; ``extras["safeguard"]``
    where the safeguard is on) and the number of objective evaluations."""
    new, out = PaperRule(net.config).step(net, state, objective, differentiable=False, step_scale=step_scale)
    return new, out.legacy(), out.evals
