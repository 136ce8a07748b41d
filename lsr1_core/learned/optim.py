"""A ``torch.optim.Optimizer`` that applies a trained L-SR1 model to any parameters.

    opt = LSR1Optimizer(model.parameters(), checkpoint="pretrained/quadratic")
    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss
    for _ in range(20):
        opt.step(closure)

All parameters of the optimizer are treated as one vector of N coordinates (the element-wise
MLPs work at any N). Like ``torch.optim.LBFGS`` it needs a closure and supports one param group.
"""
from __future__ import annotations

import torch

from ..errors import LSR1Error, NonFiniteError
from .model import LSR1Net, LSR1State, advance, propose
from .solver import _with_memory, inference_mode


class LSR1Optimizer(torch.optim.Optimizer):
    def __init__(self, params, model: LSR1Net | None = None, checkpoint=None, memory: int | None = None,
                 step_scale: float = 1.0):
        """``step_scale`` multiplies the learned step sizes α. The shipped models were meta-trained on
        quadratics whose Hessian has unit Frobenius norm; on a loss with much larger curvature, scale the
        loss or the step down (the step is α·B̃g with B̃ ⪰ I, so it is never shorter than α·g)."""
        if not (isinstance(step_scale, (int, float)) and step_scale > 0):
            raise LSR1Error(f"step_scale must be a positive number, got {step_scale!r}")
        self.step_scale = float(step_scale)
        if (model is None) == (checkpoint is None):
            raise LSR1Error("give exactly one of model= or checkpoint= to LSR1Optimizer")
        if checkpoint is not None:
            from ..checkpoints import load_model
            model, _ = load_model(checkpoint)
        if memory is not None:
            if not isinstance(memory, int) or memory < 1:
                raise LSR1Error(f"buffer size L must be a positive integer, got {memory!r}")
            model = _with_memory(model, memory)
        super().__init__(params, {})
        if len(self.param_groups) != 1:
            raise LSR1Error("LSR1Optimizer supports a single parameter group (like torch.optim.LBFGS)")
        self.net = model
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._lsr1: LSR1State | None = None
        self.last_alpha: torch.Tensor | None = None
        self.last_secant_residual: float | None = None

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

    @torch.no_grad()
    def step(self, closure):
        if closure is None:
            raise LSR1Error("LSR1Optimizer.step needs a closure that re-evaluates the loss and calls backward()")
        with torch.enable_grad():
            loss = closure()
        x = self._flat(grads=False)
        g = self._flat(grads=True)
        if not torch.isfinite(g).all() or not torch.isfinite(x).all():
            raise NonFiniteError("the parameters or their gradients are not finite; the optimizer stopped "
                                 "before changing anything (lower the loss scale or check the model)")
        w = next(self.net.parameters())
        if w.dtype != x.dtype or w.device != x.device:
            self.net.to(device=x.device, dtype=x.dtype)
        f = torch.as_tensor(float(loss), dtype=x.dtype, device=x.device).view(1)
        st = self._lsr1
        if st is None:
            st = LSR1State(x=x, f=f, g=g, p=x, d=g, q=g, W=x.new_zeros(1, 0, x.shape[1]), Bq=g, k=0)
        else:
            st, secant, rel, _ = advance(st, x, f, g, st.d, st.W, self._op)
            self.last_secant_residual = float(rel)
        with inference_mode(self.net, rows=x.shape[1]):
            x_new, v, alpha, d, W, op = propose(self.net, st)
        if self.step_scale != 1.0:
            alpha = alpha * self.step_scale
            x_new = st.x - alpha * d
        st.d, st.W = d, W
        self._lsr1, self._op = st, op
        self.last_alpha = alpha
        self._write(x_new)
        return loss

    def state_dict(self):
        sd = super().state_dict()
        st = self._lsr1
        if st is not None:
            sd["lsr1"] = {k: getattr(st, k) for k in ("x", "f", "g", "p", "d", "q", "W", "Bq")}
            sd["lsr1"]["k"] = st.k
        return sd

    def load_state_dict(self, state_dict):
        extra = state_dict.pop("lsr1", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self._lsr1 = LSR1State(**extra)
            from .model import LSR1Operator
            cfg = self.net.config
            full = extra["W"].shape[1] >= cfg.memory
            self._op = LSR1Operator(extra["W"], identity=not (cfg.drop_identity_when_full and full),
                                    rescale=cfg.rescale_direction)
