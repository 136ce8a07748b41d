"""L-SR1 as a solver on the batched interface, and the inference-mode switch."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, LSR1Error
from ..solvers.base import Solver, StepInfo
from ..solvers.stopping import check_tolerance
from .io import load_model
from .model import FORMS, LSR1Net, LSR1State, paper_step
from .qn import qn_init_state, qn_step


@contextlib.contextmanager
def inference_mode(net: LSR1Net, rows: int | None = None):
    """Evaluation behaviour of an L-SR1 net, restored on exit.

    Dropout is off. BatchNorm uses batch statistics when the config says
    ``bn_train_at_eval`` (the authors' evaluation) — with momentum 0 so the stored running
    statistics are never changed by inference — and running statistics otherwise, or when
    there is only one row to normalise over.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    if not bns and not any(isinstance(m, nn.Dropout) and m.p > 0 for m in net.modules()):
        # train and eval mode compute the same here (the qn form: no BatchNorm, no dropout): nothing to switch,
        # which saves two passes over every module per step
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


# the qn form's per-step marks a trace records (as 0/1 in x's dtype): what the safeguard and the memory did
QN_STEP_FLAGS = ("safeguard", "skipped", "restarted", "bfgs", "lengthened")


class LSR1Solver(Solver):
    """A trained L-SR1 model as a solver.

    ``LSR1Solver(model=net)`` or ``LSR1Solver(checkpoint="pretrained/qn_quadratic")``; ``memory``
    overrides the buffer size L used at test time (the paper tests with other L than trained);
    ``step_scale`` multiplies the learned step sizes; ``form`` ("paper" or "qn"), when given, refuses a
    model of the other form; ``h0`` overrides a qn model's initial-matrix rule ("envelope" or "two_scale"),
    ``fallback`` what it does with a pair SR1 cannot use positively ("skip" or "bfgs"), ``restart`` whether it
    forgets its memory where the safeguard finds no acceptable step, ``extrapolate`` how many trials may lengthen
    a step (0: never), ``backtrack`` how it shortens one ("halve" or "interpolate"). ``gtol`` / ``ftol`` are the stopping tolerances :func:`~lsr1_core.solvers.run` uses for
    this solver (scipy's conventions: max|g| ≤ gtol, relative decrease of f ≤ ftol; None: never stop).
    """

    name = "lsr1"

    def __init__(self, model: LSR1Net | None = None, checkpoint: str | Path | None = None,
                 memory: int | None = None, name: str | None = None, device=None, step_scale: float = 1.0,
                 form: str | None = None, h0: str | None = None, fallback: str | None = None,
                 restart: bool | None = None, extrapolate: int | None = None, backtrack: str | None = None, gtol: float | None = None,
                 ftol: float | None = None):
        if (model is None) == (checkpoint is None):
            raise LSR1Error("give exactly one of model= or checkpoint= to LSR1Solver")
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
        qn_rules = {k: v for k, v in (("h0", h0), ("fallback", fallback), ("restart", restart),
                                                 ("extrapolate", extrapolate), ("backtrack", backtrack))
                     if v is not None}
        if qn_rules:
            if model.config.form != "qn":
                raise LSR1Error(f"{'/'.join(qn_rules)} applies to the qn form only; this model is of the "
                                f"{model.config.form!r} form")
            model = model.with_config(**qn_rules)
        self.net = model
        if name:
            self.name = name

    @property
    def form(self) -> str:
        return self.net.config.form

    def _init(self, objective):
        st = self.state
        x = st["x"]
        p = next(self.net.parameters())
        if x.dtype != p.dtype or x.device != p.device:
            self.net.to(device=x.device, dtype=x.dtype)
        g = st["g"]
        if self.form == "qn":
            with torch.no_grad():
                self._s = qn_init_state(self.net, objective, x, st["f"], g)
            return
        self._s = LSR1State.initial(x, st["f"], g)

    def _step(self, objective):
        s = self._s
        s.x, s.f, s.g = self.state["x"], self.state["f"], self.state["g"]
        with torch.no_grad(), inference_mode(self.net, rows=s.x.numel()):
            if self.form == "qn":
                new, out = qn_step(self.net, s, objective, step_scale=self.step_scale)
                evals = out.extras["evals"]
                extras = {"v": out.v, "secant_residual": out.secant_rel, "secant_sq": out.secant,
                          **{k: out.extras[k].to(s.x.dtype) for k in QN_STEP_FLAGS}}
                step_size = out.alpha
            else:
                new, out, evals = paper_step(self.net, s, objective, self.step_scale)
                extras = {"v": out.v, "secant_residual": out.secant_rel, "secant_sq": out.secant}
                if "safeguard" in out.extras:
                    extras["safeguard"] = out.extras["safeguard"].to(s.x.dtype)
                step_size = out.alpha
        self._s = new
        self.state.update(x=new.x, f=new.f, g=new.g, W=new.W)
        return StepInfo(direction=out.d, step_size=step_size, operator=out.operator, extras=extras, evals=evals)

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


def check_form(net: LSR1Net, form: str | None, source=None) -> None:
    """Refuse a model of the other form than the one asked for, saying which is which."""
    if form is None:
        return
    if form not in FORMS:
        raise LSR1Error(f"unknown L-SR1 form {form!r}; choose one of {list(FORMS)}")
    if net.config.form != form:
        where = f"checkpoint {source}" if source is not None else "the given model"
        raise CheckpointError(f"{where} holds the {net.config.form!r} form of L-SR1, but the {form!r} form was "
                              f"asked for; load it without form= or pick a {form!r} checkpoint")
