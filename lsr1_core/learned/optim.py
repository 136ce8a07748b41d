"""A ``torch.optim.Optimizer`` that applies a trained L-SR1 model to any parameters.

    opt = LSR1Optimizer(model.parameters(), checkpoint="pretrained/qn_quadratic")
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
"""
from __future__ import annotations

import torch

from ..errors import LSR1Error, NonFiniteError
from .io import load_model
from .model import LSR1Net, LSR1Operator, LSR1State, advance, paper_step, propose
from .qn import qn_init_state, qn_operator, qn_step
from ..solvers.stopping import StopRule
from .solver import check_form, check_step_scale, inference_mode

_STATE_TENSORS = ("x", "f", "g", "p", "d", "q", "W", "Bq", "gamma", "P", "Q", "U")


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
        f = torch.as_tensor(float(loss), dtype=x.dtype, device=x.device).view(1)
        return f, self.opt._flat(grads=True).to(x.dtype)

    def value(self, x: torch.Tensor):
        return self.value_and_grad(x)[0]


class LSR1Optimizer(torch.optim.Optimizer):
    def __init__(self, params, model: LSR1Net | None = None, checkpoint=None, memory: int | None = None,
                 step_scale: float = 1.0, form: str | None = None, tolerance_grad: float | None = 1e-7,
                 tolerance_change: float | None = 1e-9):
        """``step_scale`` multiplies the learned step sizes α (default 1: the qn form needs no tuning; the
        paper form's α ≈ γ1 was learned at one problem scale and may need a smaller value on a loss with
        larger curvature). ``form`` ("paper" or "qn"), when given, refuses a checkpoint of the other form."""
        self.step_scale = check_step_scale(step_scale)
        self._rule = StopRule(tolerance_grad, tolerance_change, mode="torch",
                              names=("tolerance_grad", "tolerance_change"))
        self.converged: bool = False
        self.stop_reason: str | None = None
        if (model is None) == (checkpoint is None):
            raise LSR1Error("give exactly one of model= or checkpoint= to LSR1Optimizer")
        if checkpoint is not None:
            model, _ = load_model(checkpoint)
        check_form(model, form, checkpoint)
        if memory is not None:
            model = model.with_memory(memory)
        super().__init__(params, {})
        if len(self.param_groups) != 1:
            raise LSR1Error("LSR1Optimizer supports a single parameter group (like torch.optim.LBFGS)")
        self.net = model
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._lsr1: LSR1State | None = None
        self._op: LSR1Operator | None = None
        self._cache: tuple | None = None  # (x, f, g) of the accepted point, reused when x is unchanged
        self.last_alpha: torch.Tensor | None = None
        self.last_secant_residual: float | None = None
        self.last_evals: int = 0
        self.last_safeguard: bool = False

    def _params(self):
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    def _flat(self, grads: bool) -> torch.Tensor:
        out = []
        for p in self._params():
            t = (p.grad if p.grad is not None else torch.zeros_like(p)) if grads else p.data
            out.append(t.reshape(-1))
        return torch.cat(out).unsqueeze(0)

    def _write(self, x: torch.Tensor) -> None:
        i = 0
        for p in self._params():
            n = p.numel()
            p.data.copy_(x[0, i:i + n].view_as(p).to(p.dtype))
            i += n

    def _start(self, closure):
        """f and g at the current parameters (from the cache when they are the accepted point)."""
        x = self._flat(grads=False)
        if self._cache is not None and torch.equal(self._cache[0].to(x.dtype), x):
            return x, self._cache[1], self._cache[2], self._cache[3], 0
        with torch.enable_grad():
            loss = closure()
        f = torch.as_tensor(float(loss), dtype=x.dtype, device=x.device).view(1)
        return x, f, self._flat(grads=True), loss, 1

    @torch.no_grad()
    def step(self, closure):
        if closure is None:
            raise LSR1Error("LSR1Optimizer.step needs a closure that re-evaluates the loss and calls backward()")
        x, f, g, loss, evals = self._start(closure)
        if evals:  # the parameters were changed since the last step: whatever converged before is void
            self.converged, self.stop_reason = False, None
        if self.converged:
            self.last_evals = 0
            return loss
        if not torch.isfinite(g).all() or not torch.isfinite(x).all() or not torch.isfinite(f).all():
            raise NonFiniteError("the loss, the parameters or their gradients are not finite; the optimizer "
                                 "stopped before changing anything (lower the loss scale or check the model)")
        w = next(self.net.parameters())
        if w.dtype != x.dtype or w.device != x.device:
            self.net.to(device=x.device, dtype=x.dtype)
        cfg = self.net.config
        hit, why = self._rule.at_start(g)
        if bool(hit[0]):
            self.converged, self.stop_reason, self.last_evals = True, why[0], evals
            self._cache = (x.clone(), f, g, f.reshape(()))
            return loss
        if cfg.form == "qn" or cfg.safeguard is not None:
            out = self._safe_step(closure, x, f, g, loss, evals)
            new = self._lsr1
            self._check_stop(x, f, new.x, new.f, new.g)
            return out
        st = self._lsr1
        if st is None:
            st = LSR1State.initial(x, f, g)
        else:
            st, secant, rel, _ = advance(st, x, f, g, st.d, st.W, self._op)
            self.last_secant_residual = float(rel)
        with inference_mode(self.net, rows=x.shape[1]):
            prop = propose(self.net, st)
        alpha, d, W, op = prop.alpha * self.step_scale, prop.d, prop.W, prop.operator
        x_new = st.x - alpha * d
        if not torch.isfinite(x_new).all():
            raise NonFiniteError("the learned step is not finite (the model diverged on this loss); the "
                                 "parameters were left unchanged — lower step_scale or use a qn model")
        st.d, st.W = d, W
        self._lsr1, self._op = st, op
        self.last_alpha, self.last_evals, self._cache = alpha, evals, None
        self._write(x_new)
        return loss

    def _safe_step(self, closure, x, f, g, loss, evals):
        obj = _ClosureObjective(self, closure)
        with inference_mode(self.net, rows=x.shape[1]):
            if self.net.config.form == "qn":
                st = self._lsr1
                if st is None:
                    st = qn_init_state(self.net, obj, x, f, g)
                else:
                    st.x, st.f, st.g = x, f, g
                new, out = qn_step(self.net, st, obj, step_scale=self.step_scale)
                self.last_secant_residual = float(out.secant_rel)
                self.last_safeguard = bool(out.extras["safeguard"].any())
            else:
                new, out = self._paper_safe(obj, x, f, g)
        self._write(new.x)  # the safeguard's last evaluation was at the accepted point
        self._lsr1, self._op = new, out.operator
        self._cache = (new.x.clone(), new.f, new.g, new.f.reshape(()))
        self.last_alpha, self.last_evals = out.alpha, evals + obj.evals
        return loss

    def _check_stop(self, x, f, x_new, f_new, g_new) -> None:
        self._k = getattr(self, "_k", 0) + 1
        hit, why = self._rule.after_step(self._k, x, f, x_new, f_new, g_new)
        if bool(hit[0]):
            self.converged, self.stop_reason = True, why[0]

    def _paper_safe(self, obj, x, f, g):
        st = self._lsr1
        if st is None:
            st = LSR1State.initial(x, f, g)
        else:
            st.x, st.f, st.g = x, f, g
        new, out, _ = paper_step(self.net, st, obj, self.step_scale)
        self.last_safeguard = bool(out.extras["safeguard"].any())
        return new, out

    def state_dict(self):
        sd = super().state_dict()
        st = self._lsr1
        if st is not None:
            sd["lsr1"] = {k: getattr(st, k) for k in _STATE_TENSORS if getattr(st, k) is not None}
            sd["lsr1"]["k"] = st.k
        return sd

    def load_state_dict(self, state_dict):
        extra = state_dict.pop("lsr1", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            unknown = sorted(set(extra) - set(_STATE_TENSORS) - {"k"})
            if unknown:
                raise LSR1Error(f"optimizer state holds unknown L-SR1 fields {unknown}")
            self._lsr1 = LSR1State(**extra)
            cfg = self.net.config
            full = extra["W"].shape[1] >= cfg.memory
            if cfg.form == "qn" and extra.get("P") is not None:
                self._op = qn_operator(cfg, extra["W"], extra["P"], extra["Q"], extra["gamma"])
            else:
                self._op = LSR1Operator(extra["W"], identity=not (cfg.drop_identity_when_full and full),
                                        rescale=cfg.rescale_direction, scale=extra.get("gamma"))
            self._cache = None
