"""One interface for L-SR1's update rules: everything that steps a learned L-SR1 model goes through it.

An update rule is one way of turning the network's outputs into steps. This library has two, each in its own
file: :class:`~lsr1_core.learned.paper.PaperRule` (Algorithm 1 of the paper, ``LSR1Config(form="paper")``) and
:class:`~lsr1_core.learned.qn.QNRule` (the scale-free quasi-Newton form, ``LSR1Config.qn()``).
:func:`rule_for` is the only place that reads ``config.form``; the solver, the ``torch.optim`` optimizer, the
meta-training unroll and the HMR model call the rule it returns and never branch on the form.

    rule = rule_for(net.config)
    state = rule.init(net, objective, x0)                   # (f0, g0 may be given: then no evaluation)
    state, out = rule.step(net, state, objective, differentiable=False)
    out.direction, out.step_size, out.evals, out.safeguard  # a typed StepOut

``differentiable=True`` is the meta-training step (the unroll and the HMR model take it whether or not gradients
are recorded): the qn rule's safeguard then shortens a step at most :data:`TRAIN_MAX_HALVINGS` times, and the paper
rule takes Algorithm 1's plain step (no safeguard) as its training always did. ``differentiable=False`` is the
inference step (solver, optimizer): up to :data:`MAX_HALVINGS` halvings, the paper rule's safeguard where its config
asks for it.

The habit follows ``torch.optim`` (one ``step`` that owns its evaluations, state in plain tensors) and
google/learned_optimization (one small interface per learned optimizer, one file and one typed state each).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..errors import CheckpointError, LSR1Error
from .safeguard import MAX_HALVINGS

if TYPE_CHECKING:  # (the model imports this module: its types are named, not imported)
    from .model import LSR1Config, LSR1Net, LSR1State

# The meta-training step's limit on the safeguard's halvings (the unroll and the HMR model); inference uses
# MAX_HALVINGS (lsr1_core.learned.safeguard), 30.
TRAIN_MAX_HALVINGS = 12

# The per-step marks a StepOut may carry ((B,) bool each), in the order traces record them.
MARKS = ("safeguard", "skipped", "restarted", "bfgs", "lengthened")

__all__ = ["LSR1StepOut", "MARKS", "MAX_HALVINGS", "TRAIN_MAX_HALVINGS", "StepOut", "UpdateRule", "check_form",
           "check_options", "register", "rule_for"]


@dataclass
class LSR1StepOut:
    """The older step output of ``lsr1_step``/``paper_step``/``qn_step`` (:meth:`StepOut.legacy`)."""
    v: torch.Tensor
    alpha: torch.Tensor
    d: torch.Tensor
    operator: object
    secant: torch.Tensor  # (B,) ‖p_k − B̃_k q_k‖²
    secant_rel: torch.Tensor  # (B,) ‖p_k − B̃_k q_k‖ / ‖p_k‖
    extras: dict = field(default_factory=dict)


@dataclass
class StepOut:
    """What one step of an update rule did (B problems, N coordinates)."""

    direction: torch.Tensor            # (B, N) d: x_new = x − step_size ⊙ d (before a safeguard replaced it)
    step_size: torch.Tensor | None     # (B, N) the step size actually taken (None: the caller's, advance)
    operator: object                   # the curvature operator (inverse-Hessian approximation) that made d
    evals: int                         # objective evaluations of this step (a pending probe included)
    vector: torch.Tensor               # (B, N) the step's new rank-one vector v
    secant: torch.Tensor               # (B,) ‖p − Hq‖² (the paper: of the operator that made the step, Eq. 8)
    secant_rel: torch.Tensor           # (B,) ‖p − Hq‖ / ‖p‖
    learned_step: torch.Tensor | None = None  # (B, N) the learned α·step_scale before the safeguard (qn)
    secant_rel_sq: torch.Tensor | None = None  # (B,) ‖p − Hq‖²/‖p‖² with its graph (qn)
    departure: torch.Tensor | None = None      # (B,) mean(u²), the learned departure from SR1 (qn)
    safeguard: torch.Tensor | None = None      # (B,) bool: the safeguard changed the step (None: none ran)
    skipped: torch.Tensor | None = None        # (B,) bool: the pair's SR1 vector was not used (qn)
    restarted: torch.Tensor | None = None      # (B,) bool: the row forgot its memory (qn, restart)
    bfgs: torch.Tensor | None = None           # (B,) bool: the pair entered H as a BFGS update (qn)
    lengthened: torch.Tensor | None = None     # (B,) bool: the full step was lengthened (qn, extrapolate)
    extras: dict = field(default_factory=dict)

    def marks(self) -> dict[str, torch.Tensor]:
        """The marks this rule records ((B,) bool), in :data:`MARKS` order; those it has none of are left out."""
        return {k: getattr(self, k) for k in MARKS if getattr(self, k) is not None}

    def legacy(self) -> LSR1StepOut:
        """The older :class:`~lsr1_core.learned.model.LSR1StepOut` (``qn_step``/``paper_step``/``lsr1_step``)."""
        extras = dict(self.extras)
        if self.secant_rel_sq is not None:  # the qn form's extras, keys as before
            extras.update(secant_rel_sq=self.secant_rel_sq, departure=self.departure, safeguard=self.safeguard,
                          skipped=self.skipped, evals=self.evals, learned_alpha=self.learned_step,
                          restarted=self.restarted, bfgs=self.bfgs, lengthened=self.lengthened)
        elif self.safeguard is not None:
            extras["safeguard"] = self.safeguard
        return LSR1StepOut(v=self.vector, alpha=self.step_size, d=self.direction, operator=self.operator,
                           secant=self.secant, secant_rel=self.secant_rel, extras=extras)


class UpdateRule:
    """The interface every L-SR1 update rule implements (see the module docstring).

    Class attributes: ``name`` (the form it implements), ``scale_free`` (iterates change with f → c·f and x → s·x
    as classical quasi-Newton methods' do, so one network may run on coordinates of different scales at once, e.g.
    HMR's pose and shape), ``options`` (the config fields that may be changed on a trained model at inference,
    :meth:`LSR1Net.with_config`), ``splittable`` (:meth:`propose` and :meth:`advance` exist: the step is one
    proposal, one evaluation there, and the update, so a caller may make that evaluation itself)."""

    name: str = ""
    scale_free: bool = False
    options: tuple[str, ...] = ()
    splittable: bool = False

    def __init__(self, config: LSR1Config):
        self.config = config

    def init(self, net: LSR1Net, objective, x0: torch.Tensor, f0: torch.Tensor | None = None,
             g0: torch.Tensor | None = None) -> LSR1State:
        """The state at x0 (f0, g0: the value and gradient there when known, else evaluated)."""
        raise NotImplementedError

    def step(self, net: LSR1Net, state: LSR1State, objective, *, differentiable: bool,
             detach_gradient: bool = False, step_scale: float = 1.0) -> tuple[LSR1State, StepOut]:
        """One step from ``state``; ``detach_gradient`` detaches the new gradient (first-order meta-gradient)."""
        raise NotImplementedError

    @property
    def deferred(self) -> bool:
        """True where an inference step is exactly :meth:`propose`, one evaluation at the proposal and
        :meth:`advance` (no safeguard, no probe): :class:`LSR1Optimizer` then leaves the evaluation to its next
        closure call, one call per step."""
        return False

    def propose(self, net: LSR1Net, state: LSR1State, step_scale: float = 1.0):
        raise LSR1Error(f"the {self.name!r} rule's step is one call (its safeguard and probe evaluate inside it); "
                        "use step()")

    def advance(self, net: LSR1Net, state: LSR1State, x, f, g, d, W, operator) -> tuple[LSR1State, StepOut]:
        raise LSR1Error(f"the {self.name!r} rule's step is one call (its safeguard and probe evaluate inside it); "
                        "use step()")

    def init_heads(self, net: LSR1Net) -> None:
        """Initialise the generators' output layers of a new network (the rule's untrained start)."""

    def operator(self, net: LSR1Net, state: LSR1State):
        """The operator a (saved) state describes, rebuilt from its tensors."""
        raise NotImplementedError

    def check_state(self, fields: dict) -> None:
        """``LSR1Error`` where a saved state (name → tensor) lacks what this rule's next step reads."""
        missing = [n for n in self.state_fields if fields.get(n) is None]
        if missing:
            raise LSR1Error(f"optimizer state lacks the L-SR1 fields {missing} that the {self.name!r} form needs")

    state_fields: tuple[str, ...] = ("x", "f", "g", "p", "d", "q", "W", "Bq")

    def check_saved_form(self, saved, fields: dict) -> None:
        """``LSR1Error`` where a saved optimizer state is of another form than this rule's (``saved``: the form it
        records, None in states saved before it was recorded: a qn state holds its pairs ``P``)."""
        if saved is None:
            saved = "qn" if fields.get("P") is not None else "paper"
        if saved != self.name:
            raise LSR1Error(f"this optimizer state was saved by an L-SR1 optimizer of the {saved!r} form; this "
                            f"optimizer's model is of the {self.name!r} form — load it into an optimizer with the "
                            "same model")


_RULES: dict[str, type[UpdateRule]] = {}


def register(cls: type[UpdateRule]) -> type[UpdateRule]:
    """Class decorator: make a rule the one of the form named by its ``name`` (lsr1_core.learned imports both)."""
    _RULES[cls.name] = cls
    return cls


def rule_for(config: "LSR1Config") -> UpdateRule:
    """The update rule of a config: the one place that reads ``config.form``."""
    cls = _RULES.get(config.form)
    if cls is None:
        raise LSR1Error(f"unknown L-SR1 form {config.form!r}; this library knows {sorted(_RULES)}")
    return cls(config)


def check_options(config: "LSR1Config", names) -> None:
    """``LSR1Error`` where an inference option (``h0``, ``fallback``, …) does not belong to the config's rule."""
    rule = rule_for(config)
    bad = [n for n in names if n not in rule.options]
    if bad:
        owners = sorted(name for name, cls in _RULES.items() if set(bad) <= set(cls.options))
        whose = f"the {'/'.join(owners)} form only" if owners else "no L-SR1 form"
        raise LSR1Error(f"{'/'.join(bad)} applies to {whose}; this model is of the {rule.name!r} form")


def check_form(net: "LSR1Net", form: str | None, source=None) -> None:
    """Refuse a model of the other form than the one asked for, saying which is which."""
    if form is None:
        return
    if form not in _RULES:
        raise LSR1Error(f"unknown L-SR1 form {form!r}; choose one of {sorted(_RULES)}")
    have = rule_for(net.config).name
    if have != form:
        where = f"checkpoint {source}" if source is not None else "the given model"
        raise CheckpointError(f"{where} holds the {have!r} form of L-SR1, but the {form!r} form was "
                              f"asked for; load it without form= or pick a {form!r} checkpoint")
