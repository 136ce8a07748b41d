"""L-SR1 as a solver on the batched interface, and the inference-mode switch."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import LSR1Error
from ..solvers.base import Solver, StepInfo
from ..solvers.stopping import check_tolerance
from .io import load_model
from .model import LSR1Net, default_net
from .rules import MARKS, check_form, check_options, rule_for


def inference_mode(net: LSR1Net, rows: int | None = None):
    """Evaluation behaviour of an L-SR1 net, restored on exit (a context manager).

    Dropout is off. BatchNorm uses batch statistics when the config says
    ``bn_train_at_eval`` (the authors' evaluation) — with momentum 0 so the stored running
    statistics are never changed by inference — and running statistics otherwise, or when
    there is only one row to normalise over. A net with neither (marked once it was scanned) gets a context that
    does nothing, without the generator a switching one needs (the qn form's per-step path).
    """
    if getattr(net, "_lsr1_plain", False):  # scanned before: neither built by its config nor in its modules
        return contextlib.nullcontext(net)
    return _switched(net, rows)


@contextlib.contextmanager
def _switched(net: LSR1Net, rows: int | None):
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    if not bns and not any(isinstance(m, nn.Dropout) and m.p > 0 for m in net.modules()):
        # train and eval mode compute the same here (the qn form: no BatchNorm, no dropout): nothing to switch,
        # which saves two passes over every module per step; a net whose config says so is not scanned again
        net._lsr1_plain = not net.config.batchnorm and net.config.dropout == 0
        yield net
        return
    was_training = net.training
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    net.eval()
    use_batch = net.config.bn_train_at_eval and (rows is None or rows > 1)
    try:
        if use_batch:
            for m in bns:
                m.train()
                m.momentum = 0.0
        yield net
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            m.num_batches_tracked.copy_(nbt)
        net.train(was_training)


# the per-step marks a trace records (as 0/1 in x's dtype): what the safeguard and the memory did (the qn rule
# records all of them, the paper rule "safeguard" where its safeguard is on)
QN_STEP_FLAGS = MARKS


class LSR1Solver(Solver):
    """A trained L-SR1 model as a solver.

    ``LSR1Solver(model=net)`` or ``LSR1Solver(checkpoint="pretrained/qn_quadratic")``; with neither, the
    untrained ``LSR1Config.qn_bfgs()`` form (:func:`~lsr1_core.learned.model.default_net`); ``memory``
    overrides the buffer size L used at test time (the paper tests with other L than trained);
    ``step_scale`` multiplies the learned step sizes; ``form`` ("paper" or "qn"), when given, refuses a
    model of the other form; ``h0`` overrides a qn model's initial-matrix rule ("envelope", "two_scale" or "bb"),
    ``fallback`` what it does with a pair SR1 cannot use positively ("skip" or "bfgs"), ``update`` how a pair
    enters H ("sr1", or "bfgs": every pair a BFGS update), ``restart`` whether it forgets its memory where the
    safeguard finds no acceptable step, ``extrapolate`` how many trials may lengthen a step (0: never),
    ``backtrack`` its line search ("halve", "interpolate", or "wolfe": strong Wolfe), ``gamma_factor`` the factor
    on H₀'s scale (``LSR1Config.qn_bfgs()`` uses 1 with ``h0="bb"``), ``probe_pair`` whether the first step's
    curvature probe also stores its pair (``LSR1Config.qn_bfgs()``: no, it sets γ only). ``gtol`` / ``ftol`` are the stopping tolerances :func:`~lsr1_core.solvers.run` uses for
    this solver (scipy's conventions: max|g| ≤ gtol, relative decrease of f ≤ ftol; None: never stop).
    """

    name = "lsr1"

    def __init__(self, model: LSR1Net | None = None, checkpoint: str | Path | None = None,
                 memory: int | None = None, name: str | None = None, device=None, step_scale: float = 1.0,
                 form: str | None = None, h0: str | None = None, fallback: str | None = None,
                 restart: bool | None = None, extrapolate: int | None = None, backtrack: str | None = None,
                 gtol: float | None = None, ftol: float | None = None, update: str | None = None,
                 gamma_factor: float | None = None, probe_pair: bool | None = None):
        if model is not None and checkpoint is not None:
            raise LSR1Error("give at most one of model= or checkpoint= to LSR1Solver (neither: the untrained "
                            "qn_bfgs form, LSR1Config.qn_bfgs())")
        if model is None and checkpoint is None:
            model = default_net()
        self.step_scale = check_step_scale(step_scale)
        self.gtol, self.ftol = check_tolerance("gtol", gtol), check_tolerance("ftol", ftol)
        if checkpoint is not None:
            model, card = load_model(checkpoint, device=device)
            self.card = card
        else:
            self.card = None
        check_form(model, form, checkpoint)
        if memory is not None:
            model = model.with_memory(memory)
        options = {k: v for k, v in (("h0", h0), ("fallback", fallback), ("restart", restart),
                                     ("extrapolate", extrapolate), ("backtrack", backtrack), ("update", update),
                                     ("gamma_factor", gamma_factor), ("probe_pair", probe_pair))
                   if v is not None}
        if options:
            check_options(model.config, options)
            model = model.with_config(**options)
        self.net = model
        if name:
            self.name = name

    @property
    def rule(self):
        """The update rule of the model's config (:func:`~lsr1_core.learned.rules.rule_for`)."""
        return rule_for(self.net.config)

    @property
    def form(self) -> str:
        """The model's form ("paper" or "qn"): the name of its update rule."""
        return self.rule.name

    def _init(self, objective):
        st = self.state
        x = st["x"]
        p = next(self.net.parameters())
        if x.dtype != p.dtype or x.device != p.device:
            self.net.to(device=x.device, dtype=x.dtype)
        with torch.no_grad():
            self._s = self.rule.init(self.net, objective, x, st["f"], st["g"])

    def _step(self, objective):
        s = self._s
        s.x, s.f, s.g = self.state["x"], self.state["f"], self.state["g"]
        with torch.no_grad(), inference_mode(self.net, rows=s.x.numel()):
            new, out = self.rule.step(self.net, s, objective, differentiable=False, step_scale=self.step_scale)
        extras = {"v": out.vector, "secant_residual": out.secant_rel, "secant_sq": out.secant,
                  **{k: m.to(s.x.dtype) for k, m in out.marks().items()}}
        self._s = new
        self.state.update(x=new.x, f=new.f, g=new.g, W=new.W)
        return StepInfo(direction=out.direction, step_size=out.step_size, operator=out.operator, extras=extras,
                        evals=out.evals)

    def freeze_rows(self, rows, x, f, g):
        super().freeze_rows(rows, x, f, g)
        s = self._s
        for name in ("p", "d", "q", "W", "Bq", "P", "Q", "U", "S"):
            if getattr(s, name) is not None:
                setattr(s, name, torch.nan_to_num(getattr(s, name), nan=0.0, posinf=0.0, neginf=0.0))
        if s.gamma is not None:
            s.gamma = torch.nan_to_num(s.gamma, nan=1.0, posinf=1.0, neginf=1.0)
        self.state["W"] = s.W


def check_step_scale(step_scale) -> float:
    if isinstance(step_scale, bool) or not isinstance(step_scale, (int, float)) or not (
            math.isfinite(step_scale) and step_scale > 0):
        raise LSR1Error(f"step_scale must be a positive finite number, got {step_scale!r}")
    return float(step_scale)


__all__ = ["LSR1Solver", "check_form", "check_step_scale", "inference_mode"]
