"""The unrolled meta-loss of L-SR1 (Eq. 9): K steps of a model's update rule, and its evaluation.

    L_meta = (1/K) Σ_k [ mean_b f(x_k) + λ_sec · mean_b secant_k ]

The steps are the rule's training step (:meth:`~lsr1_core.learned.rules.UpdateRule.step` with
``differentiable=True``): whichever form the model is of, this file does not look at it. The secant term is the
rule's ‖p − Hq‖² (Eq. 8), or its relative form; where the rule reports the learned departure from SR1 (the qn
form's mean(u²), equal to ‖p − Hq‖²/‖p‖² wherever the pair is used) that is the relative term.
"""
from __future__ import annotations

import torch

from ..errors import LSR1Error
from ..learned.model import LSR1Net
from ..learned.rules import rule_for
from ..learned.secant import secant_penalty
from ..learned.solver import inference_mode

# A problem's loss() may return, under this key of its statistics, its meta-loss terms as tensors with their graphs;
# the trainer then names the term whose gradient is not finite when it stops (they are not logged).
TERMS_KEY = "_terms"
META_TERMS = ("objective term (f or log-gap over the unroll)", "secant term (λ_sec · ‖p − Hq‖²)")
LOG_GAP_FLOOR = 1e-8  # log_gap: gaps below this fraction of the first one add only noise to the gradient


def unroll(net: LSR1Net, objective, x0: torch.Tensor, steps: int, secant_weight: float,
           detach_gradient: bool = False, secant_form: str = "absolute",
           meta_loss: str = "value") -> tuple[torch.Tensor, dict]:
    """K unrolled L-SR1 steps; returns the meta-loss of Eq. 9 and per-run statistics.

    ``meta_loss="log_gap"`` replaces f(x_k) by log10((f(x_k) − f*)/(f(x_0) − f*)), which weighs every
    problem the same whatever its scale (the qn form's presets train on many scales at once). (Before the rules
    were one interface the paper form's unroll ignored ``meta_loss`` and always used f; it now honours it.)
    """
    rule = rule_for(net.config)
    state = rule.init(net, objective, x0)
    f0 = state.f.detach()
    fstar = objective.min_value() if meta_loss == "log_gap" else None
    if meta_loss == "log_gap":
        if fstar is None:
            raise LSR1Error("meta_loss 'log_gap' needs an objective with a known minimum value")
        gap0 = (f0 - fstar.detach()).clamp_min(torch.finfo(f0.dtype).tiny)
    total = x0.new_zeros(())
    f_term, s_term = x0.new_zeros(()), x0.new_zeros(())
    f_sum, sec_sum, rel, fired = x0.new_zeros(()), x0.new_zeros(()), [], []  # (in x0's dtype)
    for _ in range(steps):
        state, out = rule.step(net, state, objective, differentiable=True, detach_gradient=detach_gradient)
        if meta_loss == "log_gap":
            gap = (state.f - fstar).clamp_min(0) + LOG_GAP_FLOOR * gap0
            f_k = torch.log10(gap / gap0).mean()
        else:
            f_k = state.f.mean()
        s_k = secant_penalty(out.secant, state.p, secant_form, relative=out.departure).mean()
        total = total + f_k + secant_weight * s_k
        f_term, s_term = f_term + f_k, s_term + secant_weight * s_k
        f_sum = f_sum + f_k.detach()
        sec_sum = sec_sum + s_k.detach()
        rel.append(out.secant_rel.detach().mean())
        if out.safeguard is not None:
            fired.append(out.safeguard.float().mean())
    stats = {"f_mean": float(f_sum / steps), "f_final": float(state.f.detach().mean()),
             "secant": float(sec_sum / steps),
             "secant_rel": float(torch.stack(rel).mean())}
    if fired:
        stats["safeguard"] = float(torch.stack(fired).mean())
    stats[TERMS_KEY] = {META_TERMS[0]: f_term / steps, META_TERMS[1]: s_term / steps}
    if meta_loss == "log_gap":
        stats["log_gap_final"] = float(f_k.detach())
    return total / steps, stats


def evaluate(net: LSR1Net, objective, x0, steps: int, secant_weight: float, secant_form: str = "absolute",
             meta_loss: str = "value") -> dict:
    with torch.no_grad(), inference_mode(net, rows=x0.numel()):
        loss, stats = unroll(net, objective, x0, steps, secant_weight, secant_form=secant_form, meta_loss=meta_loss)
    stats.pop(TERMS_KEY, None)
    return {"loss": float(loss), **stats}
