"""A ``torch.optim.Optimizer`` that applies an L-SR1 model to any parameters.

    opt = LSR1Optimizer(model.parameters())   # no card: the untrained LSR1Config.qn_bfgs() form
    # or a card: LSR1Optimizer(model.parameters(), checkpoint="pretrained/qn_logistic")
    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss
    for _ in range(20):
        opt.step(closure)

All parameters of the optimizer are treated as one vector of N coordinates (the element-wise
MLPs work at any N). Like ``torch.optim.LBFGS`` it needs a closure and supports one param group.

With a scale-free (``qn``) model, or any model whose config asks for the safeguard, one ``step`` may
call the closure several times: the first step probes the curvature once, and a learned step that does
not lower the loss enough is shortened. The loss and gradients of the accepted point are reused by the
next ``step`` when the parameters were not changed in between. Parameters are only ever set to finite
values: a step that would leave the finite range raises :class:`NonFiniteError` and changes nothing.

Stopping, as ``torch.optim.LBFGS``: ``tolerance_grad`` (max|∇| ≤ it) and ``tolerance_change`` (|Δloss| or
max|Δparameter| of a step below it; a step that did not move counts only after another that did not), with
torch's defaults 1e-7 and 1e-9 (None turns one off). Once converged, ``step`` returns the last loss without
calling the closure — as long as the parameters were not changed in between — and ``converged`` /
``stop_reason`` say so.

torch.optim's conventions: ``step_scale`` and the tolerances are ``defaults`` in the one param group, the L-SR1
state is ``self.state[first parameter]`` and ``state_dict``/``load_state_dict`` are the base class's (hooks add the
form and the ``"lsr1"`` view, and check a loaded state). Every step is the model's update rule
(:func:`~lsr1_core.learned.rules.rule_for`); this file never looks at the form.
"""
from __future__ import annotations

import dataclasses

import torch

from ..errors import LSR1Error, NonFiniteError
from ..rowops import all_finite, same_bits
from ..solvers.stopping import StopRule
from .io import load_model
from .model import LSR1Net, LSR1State, default_net
from .rules import check_form, rule_for
from .solver import check_step_scale, inference_mode

_STATE_TENSORS = ("x", "f", "g", "p", "d", "q", "W", "Bq", "gamma", "P", "Q", "U", "S")
_HAS_GRAD = (False,)  # _no_grad of one parameter with a gradient (shared: never changed in place)
_LEGACY_KEY = "lsr1"  # the state dict's view of the L-SR1 state (where states before 2026-12 kept it)


class _ClosureObjective:
    """The optimizer's parameters and closure seen as a one-row batched objective."""

    def __init__(self, opt: "LSR1Optimizer", closure):
        self.opt, self.closure = opt, closure
        self.evals = 0

    def value_and_grad(self, x: torch.Tensor):
        self.opt._write(x)
        with torch.enable_grad():
            loss = self.closure()
        self.evals += 1
        return _loss_tensor(loss, x), self.opt._flat(grads=True).to(x.dtype)

    def value(self, x: torch.Tensor):
        return self.value_and_grad(x)[0]


class LSR1Optimizer(torch.optim.Optimizer):
    """The optimizer (module docstring). torch.optim's conventions: the hyperparameters ``step_scale``,
    ``tolerance_grad`` and ``tolerance_change`` are in ``defaults`` and the one param group (change them there,
    as a scheduler would); the L-SR1 state lives in ``self.state`` under the first parameter, as
    ``torch.optim.LBFGS`` keeps its own, so ``state_dict``/``load_state_dict`` are the base class's. The state dict
    also shows that state under ``"lsr1"`` (with its form), the key where it was kept before; a dict holding it
    there only (saved by an older version) loads as well, and ``"lsr1"`` is what loads where both are present."""

    def __init__(self, params, model: LSR1Net | None = None, checkpoint=None, memory: int | None = None,
                 step_scale: float = 1.0, form: str | None = None, tolerance_grad: float | None = 1e-7,
                 tolerance_change: float | None = 1e-9):
        """``step_scale`` multiplies the learned step sizes α (default 1: the qn form needs no tuning; the
        paper form's α ≈ γ1 was learned at one problem scale and may need a smaller value on a loss with
        larger curvature). ``form`` ("paper" or "qn"), when given, refuses a checkpoint of the other form. With
        neither ``model`` nor ``checkpoint`` it runs the untrained ``LSR1Config.qn_bfgs()`` form
        (:func:`~lsr1_core.learned.model.default_net`), the one that matches L-BFGS at equal evaluations."""
        defaults = dict(step_scale=check_step_scale(step_scale), tolerance_grad=tolerance_grad,
                        tolerance_change=tolerance_change)
        self._stop = self._stop_rule(defaults)
        self.converged: bool = False
        self.stop_reason: str | None = None
        self._steps = 0  # steps taken (the stop rule's reasons name them)
        self._no_grad: list[bool] = []  # per parameter: its gradient was None at the last evaluation
        if model is not None and checkpoint is not None:
            raise LSR1Error("give at most one of model= or checkpoint= to LSR1Optimizer (neither: the untrained "
                            "qn_bfgs form, LSR1Config.qn_bfgs())")
        if checkpoint is not None:
            model, _ = load_model(checkpoint)
        elif model is None:
            model = default_net()
        check_form(model, form, checkpoint)
        if memory is not None:
            model = model.with_memory(memory)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise LSR1Error("LSR1Optimizer supports a single parameter group (like torch.optim.LBFGS)")
        _check_params(self.param_groups[0]["params"])
        self.net = model
        self._net_param = next(model.parameters())  # (its dtype and device follow the loss's: step() moves the net)
        self.rule = rule_for(model.config)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._op = None  # the operator of the last step (rebuilt from the state on load)
        self._written = None  # (entry, state, its tensors): the state last written to self.state
        self._cache: tuple | None = None  # (x, f, g) of the accepted point, reused when x is unchanged
        self.last_alpha: torch.Tensor | None = None
        self.last_secant_residual: float | None = None
        self.last_evals: int = 0
        self.last_safeguard: bool = False
        self.register_state_dict_post_hook(_with_view)
        self.register_load_state_dict_pre_hook(_checked)
        self.register_load_state_dict_post_hook(_after_load)

    @staticmethod
    def _stop_rule(group: dict) -> StopRule:
        return StopRule(group["tolerance_grad"], group["tolerance_change"], mode="torch",
                        names=("tolerance_grad", "tolerance_change"))

    @property
    def step_scale(self) -> float:
        return self.param_groups[0]["step_scale"]

    def add_param_group(self, param_group) -> None:
        if getattr(self, "param_groups", None):
            raise LSR1Error("LSR1Optimizer supports a single parameter group (like torch.optim.LBFGS): "
                            "add_param_group after construction would add parameters that never move; build a "
                            "new optimizer over all parameters instead")
        super().add_param_group(param_group)

    # --- the L-SR1 state in self.state ------------------------------------------------------------------
    @property
    def _lsr1(self) -> LSR1State | None:
        entry = self.state.get(self.param_groups[0]["params"][0])
        if not entry or entry.get("x") is None:
            return None
        kept = self._written
        if kept is not None and kept[0] is entry and entry.get("k") == kept[1].k and all(
                a is entry.get(k) for a, k in zip(kept[2], _STATE_TENSORS)):
            kept[1].pending_evals = 0
            return kept[1]  # (the state written last, its entry unchanged since: no new object)
        return LSR1State(**{k: entry.get(k) for k in _STATE_TENSORS}, k=int(entry.get("k", 0)))

    @_lsr1.setter
    def _lsr1(self, st: LSR1State) -> None:
        values = [getattr(st, k) for k in _STATE_TENSORS]
        entry = {k: v for k, v in zip(_STATE_TENSORS, values) if v is not None}
        entry["k"] = st.k
        self.state[self.param_groups[0]["params"][0]] = entry
        self._written = (entry, st, values)

    def _params(self):
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    def _one_param(self):
        """The parameter where the group holds exactly one and it is to be optimised (the common case, taken
        without building lists), else None."""
        params = self.param_groups[0]["params"]
        return params[0] if len(params) == 1 and params[0].requires_grad else None

    def _flat(self, grads: bool) -> torch.Tensor:
        one = self._one_param()
        if grads and one is not None:  # (one parameter with a dense gradient of its own shape: no lists, no cat)
            gr = one.grad
            if gr is not None and not gr.is_sparse and gr.shape == one.shape and gr.device == one.device:
                self._no_grad = _HAS_GRAD
                # a copy, as cat makes: a closure may zero its gradients in place
                return gr.reshape(1, -1).to(one.dtype, copy=True)
        out = []
        params = self._params()
        dtype = params[0].dtype
        if grads:
            self._no_grad = []
        for p in params:
            if grads:
                if p.grad is not None and p.grad.is_sparse:
                    raise LSR1Error("LSR1Optimizer needs dense gradients; a parameter has a sparse gradient "
                                    "(e.g. nn.Embedding(sparse=True)): use sparse=False")
                if p.grad is not None and (p.grad.shape != p.shape or p.grad.device != p.device):
                    raise LSR1Error(f"a parameter's gradient has shape {tuple(p.grad.shape)} on {p.grad.device}, "
                                    f"the parameter {tuple(p.shape)} on {p.device}")
                self._no_grad.append(p.grad is None)
                t = p.grad if p.grad is not None else torch.zeros_like(p)
            else:
                t = p.data
            out.append(t.reshape(-1).to(dtype))
        return torch.cat(out).unsqueeze(0)

    def _write(self, x: torch.Tensor) -> None:
        """Set the parameters from x, except those whose gradient was None at the last evaluation (torch's
        convention: a parameter without a gradient is not stepped)."""
        one = self._one_param()
        if one is not None:  # (one parameter: no list, no slicing)
            if not (self._no_grad and self._no_grad[0]):
                one.data.copy_(x.reshape(one.shape))
            return
        params = self._params()
        i = 0
        for j, p in enumerate(params):
            n = p.numel()
            if not (j < len(self._no_grad) and self._no_grad[j]):
                p.data.copy_(x[0, i:i + n].view_as(p).to(p.dtype))
            i += n

    def _unchanged(self, x: torch.Tensor) -> bool:
        """The parameters hold x (1, n) exactly (compared in place, without flattening them into a copy)."""
        one = self._one_param()
        if one is not None:
            return same_bits(x, one.data)
        params = self._params()
        if x.dtype != params[0].dtype or x.device != params[0].device or x.shape[1] != sum(p.numel() for p in params):
            return False
        i = 0
        for p in params:
            n = p.numel()
            if not same_bits(x[0, i:i + n], p.data):
                return False
            i += n
        return True

    def _start(self, closure):
        """f and g at the current parameters (from the cache when they are the accepted point)."""
        if self._cache is not None and self._unchanged(self._cache[0]):
            return self._cache[0], self._cache[1], self._cache[2], self._cache[3], 0
        x = self._flat(grads=False)
        with torch.enable_grad():
            loss = closure()
        return x, _loss_tensor(loss, x), self._flat(grads=True), loss, 1

    @torch.no_grad()
    def step(self, closure):
        if closure is None:
            raise LSR1Error("LSR1Optimizer.step needs a closure that re-evaluates the loss and calls backward()")
        group = self.param_groups[0]
        step_scale = check_step_scale(group["step_scale"])
        if (self._stop.gtol, self._stop.ftol) != (group["tolerance_grad"], group["tolerance_change"]):
            still, self._stop = self._stop._still, self._stop_rule(group)
            self._stop._still = still
        x, f, g, loss, evals = self._start(closure)
        if evals:  # the parameters were changed since the last step: whatever converged before is void
            self.converged, self.stop_reason = False, None
        if self.converged:
            self.last_evals = 0
            return loss
        # (a cache hit is the accepted point of the last step, whose f and ∇f the safeguard found finite)
        if evals and not (all_finite(g) and all_finite(x) and all_finite(f)):
            raise NonFiniteError("the loss, the parameters or their gradients are not finite; the optimizer "
                                 "stopped before changing anything (lower the loss scale or check the model)")
        w = self._net_param
        if w.dtype != x.dtype or w.device != x.device:
            self.net.to(device=x.device, dtype=x.dtype)
            self._net_param = next(self.net.parameters())
        why = self._stop.at_start_one(g)
        if why is not None:
            self.converged, self.stop_reason, self.last_evals = True, why, evals
            self._cache = (x.clone(), f, g, f.reshape(()))
            return loss
        if self.rule.deferred:
            self._deferred_step(x, f, g, evals, step_scale)
            return loss
        out = self._safe_step(closure, x, f, g, loss, evals, step_scale)
        new = self._lsr1
        self._check_stop(x, f, new.x, new.f, new.g)
        return out

    def _deferred_step(self, x, f, g, evals, step_scale) -> None:
        """A rule whose step is propose, one evaluation, advance (no safeguard): the evaluation of this step's
        proposal is the next step's closure call, which completes it (one closure call per step)."""
        st = self._lsr1
        if st is None:
            st = self.rule.init(self.net, None, x, f, g)
        else:
            st, out = self.rule.advance(self.net, st, x, f, g, st.d, st.W, self._op)
            self.last_secant_residual = float(out.secant_rel)
        with inference_mode(self.net, rows=x.shape[1]):
            prop = self.rule.propose(self.net, st, step_scale)
        if not torch.isfinite(prop.x).all():
            raise NonFiniteError("the learned step is not finite (the model diverged on this loss); the "
                                 "parameters were left unchanged — lower step_scale or use a qn model")
        st.d, st.W = prop.d, prop.W  # the pending step, completed by the next call
        self._lsr1, self._op = st, prop.operator
        self.last_alpha, self.last_evals, self._cache = prop.alpha, evals, None
        self._write(prop.x)

    def _safe_step(self, closure, x, f, g, loss, evals, step_scale):
        try:
            return self._safe_step_inner(closure, x, f, g, loss, evals, step_scale)
        except BaseException:
            # the closure (or anything else) failed during a trial: put the parameters back where the step
            # started, so nothing is left at a trial point, and forget the cache
            self._write(x)
            self._cache = None
            raise

    def _safe_step_inner(self, closure, x, f, g, loss, evals, step_scale):
        obj = _ClosureObjective(self, closure)
        with inference_mode(self.net, rows=x.shape[1]):
            new, out = self._rule_step(obj, x, f, g, step_scale)
        self.last_secant_residual = float(out.secant_rel)
        self.last_safeguard = out.safeguard is not None and bool(out.safeguard.any())
        if not out.extras.get("x_evaluated"):  # (where it was, the parameters hold the accepted point already)
            self._write(new.x)  # the safeguard's last evaluation was at the accepted point
        self._lsr1, self._op = new, out.operator
        # (the parameters as written: those without a gradient kept their values, and f, g were evaluated so; where
        # every parameter was written, in its own dtype, they are new.x itself)
        same = not any(self._no_grad) and all(p.dtype == new.x.dtype for p in self._params())
        self._cache = (new.x if same else self._flat(grads=False), new.f, new.g, new.f.reshape(()))
        self.last_alpha, self.last_evals = out.step_size, evals + obj.evals
        return loss

    def _rule_step(self, obj, x, f, g, step_scale):
        st = self._lsr1
        if st is None:
            st = self.rule.init(self.net, obj, x, f, g)
        elif st.x is not x or st.f is not f or st.g is not g:
            st = dataclasses.replace(st, x=x, f=f, g=g)
        return self.rule.step(self.net, st, obj, differentiable=False, step_scale=step_scale)

    def _check_stop(self, x, f, x_new, f_new, g_new) -> None:
        self._steps += 1
        why = self._stop.after_step_one(self._steps, x, f, x_new, f_new, g_new)
        if why is not None:
            self.converged, self.stop_reason = True, why


# --- the state dict: the base class's, plus hooks ---------------------------------------------------------
def _with_view(opt: LSR1Optimizer, sd: dict) -> dict:
    """State-dict post-hook: the L-SR1 entry (under the first parameter's index) with its form, and the same under
    ``"lsr1"`` (where older versions kept it, and what code reading it expects)."""
    first = sd["param_groups"][0]["params"][0]
    entry = sd["state"].get(first)
    if entry:
        entry = {**{k: _own_storage(v) for k, v in entry.items()}, "form": opt.rule.name}
        sd["state"] = {**sd["state"], first: entry}
        sd[_LEGACY_KEY] = dict(entry)
    return sd


def _own_storage(v):
    """A state tensor that is a view into a larger buffer (the qn form's pair buffer) as a copy of its own
    elements, so that a saved state holds what it shows and no more; anything else as it is."""
    if not isinstance(v, torch.Tensor) or type(v) is not torch.Tensor or v.numel() == 0:
        return v
    if v.untyped_storage().nbytes() > v.numel() * v.element_size() and any(s != 0 for s in v.stride()):
        return v.clone()
    return v


def _checked(opt: LSR1Optimizer, sd) -> dict:
    """Load pre-hook: a new dict (the caller's is never changed) whose L-SR1 entry has been checked — fields, types,
    shapes and the form — and whose param group holds every hyperparameter (older dicts had none)."""
    if not isinstance(sd, dict):
        raise LSR1Error(f"an optimizer state must be a dict, got {type(sd).__name__}")
    sd = dict(sd)
    groups = sd.get("param_groups")
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict) or not isinstance(
            groups[0].get("params"), list) or not groups[0]["params"]:
        raise LSR1Error("an LSR1Optimizer state holds one parameter group with its parameters' indices")
    group = {**opt.defaults, **groups[0]}
    check_step_scale(group["step_scale"])
    LSR1Optimizer._stop_rule(group)  # the tolerances
    sd["param_groups"] = [group]
    state = sd.get("state", {})
    if not isinstance(state, dict):
        raise LSR1Error(f"optimizer state 'state' must be a dict, got {type(state).__name__}")
    first = group["params"][0]
    extra = sd.pop(_LEGACY_KEY, None)
    if extra is None:
        extra = state.get(first)
    state = {k: v for k, v in state.items() if k != first}
    if extra is not None:
        state[first] = _check_lsr1_state(extra, opt)
    sd["state"] = state
    return sd


def _after_load(opt: LSR1Optimizer) -> None:
    st = opt._lsr1
    opt._op = None if st is None else opt.rule.operator(opt.net, st)
    opt._cache = None


def _loss_tensor(loss, x: torch.Tensor) -> torch.Tensor:
    """The closure's loss as a (1,) tensor of x's dtype and device (:func:`loss_value`'s checks)."""
    return torch.tensor([loss_value(loss)], dtype=x.dtype, device=x.device)


def loss_value(loss) -> float:
    """The closure's loss as a float; anything but a real scalar (or one-element tensor) is refused."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise LSR1Error(f"the closure must return the scalar loss, got a tensor of shape {tuple(loss.shape)} "
                            "(reduce it, e.g. .mean() or .sum())")
        if loss.is_complex():
            raise LSR1Error("the closure returned a complex loss; it must be real")
        return float(loss.item())  # (no detached copy to make)
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        return float(loss)
    raise LSR1Error(f"the closure must return the loss (a scalar tensor or number), got {type(loss).__name__}: "
                    "end it with `return loss`")


def _check_params(params) -> None:
    live = [p for p in params if p.requires_grad]
    if not live or sum(p.numel() for p in live) == 0:
        raise LSR1Error("LSR1Optimizer got no parameters to optimise: every parameter is frozen "
                        "(requires_grad=False) or has no elements")
    for p in live:
        if p.device.type == "meta":
            raise LSR1Error("a parameter is on the meta device (it holds no data): materialise the model first, "
                            "e.g. model.to_empty(device='cpu') and initialise it")
        if p.dtype not in (torch.float32, torch.float64):
            raise LSR1Error(f"LSR1Optimizer needs float32 or float64 parameters, got {p.dtype}: its curvature "
                            "pairs lose all precision in half precision; keep a float32 master copy "
                            "(model.float())")
    if len({p.dtype for p in live}) > 1 or len({p.device for p in live}) > 1:
        raise LSR1Error("all parameters must share one dtype and device (they are treated as one vector), got "
                        f"{sorted({str(p.dtype) for p in live})} on {sorted({str(p.device) for p in live})}")


def _check_lsr1_state(extra, opt: LSR1Optimizer) -> dict:
    """The L-SR1 entry of a state dict: known fields of the right types and shapes, of this optimizer's form, and
    what its rule's next step reads (returned without the form, which is checked here)."""
    if not isinstance(extra, dict):
        raise LSR1Error(f"optimizer state 'lsr1' must be a dict, got {type(extra).__name__}")
    extra = {k: v for k, v in extra.items() if v is not None}
    opt.rule.check_saved_form(extra.pop("form", None), extra)
    unknown = sorted(map(str, set(extra) - set(_STATE_TENSORS) - {"k"}))
    if unknown:
        raise LSR1Error(f"optimizer state holds unknown L-SR1 fields {unknown}")
    k = extra.get("k", 0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise LSR1Error(f"optimizer state field 'k' must be a non-negative integer, got {k!r}")
    for name in _STATE_TENSORS:
        v = extra.get(name)
        if v is not None and not (isinstance(v, torch.Tensor) and v.is_floating_point()):
            raise LSR1Error(f"optimizer state field {name!r} must be a floating-point tensor, got "
                            f"{type(v).__name__}")
    missing = [n for n in ("x", "f", "g", "W") if extra.get(n) is None]
    if missing:
        raise LSR1Error(f"optimizer state lacks the L-SR1 fields {missing}")
    opt.rule.check_state(extra)
    n = sum(p.numel() for p in opt._params())
    shapes = {"f": (1,), "gamma": (1, 1)}
    for name, v in extra.items():
        if name == "k":
            continue
        want = shapes.get(name, (1, None, n) if name in ("W", "P", "Q", "U") else (1, n))
        if v.dim() != len(want) or any(w is not None and s != w for s, w in zip(v.shape, want)):
            raise LSR1Error(f"optimizer state field {name!r} has shape {tuple(v.shape)}; this optimizer's "
                            f"{n} parameters need {tuple('l' if w is None else w for w in want)}")
        if not bool(torch.isfinite(v).all()):
            raise LSR1Error(f"optimizer state field {name!r} holds NaN or infinity")
    pairs = {extra[name].shape[1] for name in ("P", "Q", "U") if name in extra}
    if len(pairs) > 1:
        raise LSR1Error(f"optimizer state fields P, Q and U must hold the same number of pairs, got {sorted(pairs)}")
    return extra
