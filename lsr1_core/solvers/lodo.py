"""LODO: Learning to Optimize During Optimization (Liao, Dangovski, Foerster, Soljačić, TMLR 2023).

LODO is a quasi-Newton method whose inverse-Hessian approximation is a small linear network
trained *online*, on the task being solved, by hypergradient descent. With momentum
``m ← βm + (1−β)g`` each step is::

    x ← x + G(θ) m,      G(θ) = −lr·[I 0] Wᵀ W [I 0]ᵀ

where ``W = B_L Π_L ⋯ B_1 Π_1`` acts on a width ``h = 2n`` (rounded up to a multiple of the block
size) space: each layer is a fixed random permutation ``Π_l`` followed by a block-diagonal
matrix ``B_l`` of ``h/4`` 4×4 blocks, initialised random orthogonal so that ``G = −lr·I`` at the
start. The loss and gradient at the new point give, on the same tape, the hypergradient

    ∂f(x + G(θ)m)/∂θ = g_newᵀ ∂(G(θ)m)/∂θ,

a vector–Jacobian product through the preconditioner applied to ``m`` with the new gradient:
no second objective evaluation. Adam (lr ``meta_lr``) then updates θ. One gradient per step.

Conventions of this library (sign and operator). The library writes every step as
``x_new = x − step_size ⊙ direction`` with a *positive* inverse-Hessian approximation. LODO's
``G`` is negative semidefinite, so the operator exposed in :class:`StepInfo` is the positive
semidefinite ``P = −G = lr·[I 0]WᵀW[I 0]ᵀ`` (:class:`LODOOperator`), the direction is
``P m`` (the actual displacement x − x_new; note: applied to the momentum, not to g) and the
step size is 1.

Order of operations. In the reference algorithm the first step uses m_0 = 0 (it does not move)
and only evaluates the gradient at x_0. :meth:`Solver.reset` already evaluates it, so here a step
first folds the gradient at the current point into m and then moves; the sequence of iterates
is the reference one with its idle first step removed.

Batching. θ has shape (B, layers, h/4, 4, 4) and every row has its own θ, Adam moments and
momentum; nothing couples rows. All rows start from the same network (drawn from ``seed``),
so a row's run does not depend on what else is in the batch.

``diagonal=True`` is the paper's "LODO-Diagonal" ablation: ``G = −lr·diag(θ)``, θ ∈ ℝⁿ
initialised to ones and trained by the same hypergradient and Adam. As in the reference
implementation θ is not squared, so this G is not constrained to be negative semidefinite (the
exposed operator ``lr·diag(θ)`` may have negative entries). The paper reports that this and the
other simpler parameterisations (a single global scale, a residual architecture) do worse than
the block network on its tasks.
"""
from __future__ import annotations

import math

import torch

from ..errors import LSR1Error, ShapeError
from ..operators import DENSE_LIMIT, CurvatureOperator, Diagonal
from .base import Solver, StepInfo


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < float("inf")):
        raise LSR1Error(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LSR1Error(f"{name} must be a positive integer, got {value!r}")
    return value


def hidden_width(n: int, block: int = 4) -> int:
    """The network's width: 2n rounded up to a multiple of ``block``.

    (The reference code adds a whole extra block when 2n is already a multiple; that only makes
    the network wider, and this library follows the paper's "padded to a multiple".)
    """
    return block * math.ceil(2 * n / block)


def init_network(n: int, layers: int = 16, block: int = 4, seed: int = 0, dtype=torch.float64,
                 device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random permutations (layers, h) and orthogonal blocks (layers, h/block, block, block).

    Orthogonal blocks make every layer orthogonal, so WᵀW = I and G = −lr·I at initialisation.
    """
    n = _positive_int("n (the number of coordinates)", n)
    layers, block = _positive_int("layers", layers), _positive_int("block", block)
    h = hidden_width(n, block)
    gen = torch.Generator().manual_seed(int(seed))
    perms = torch.stack([torch.randperm(h, generator=gen) for _ in range(layers)])
    A = torch.randn(layers, h // block, block, block, generator=gen, dtype=torch.float64)
    Q, R = torch.linalg.qr(A)
    # Fix the sign ambiguity of QR so that Q is Haar-distributed.
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
    return perms.to(device), Q.to(dtype=dtype, device=device)


def apply_network(blocks: torch.Tensor, perms: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[I 0] Wᵀ W [I 0]ᵀ v`` per row: blocks (B, L, h/k, k, k), perms (L, h), v (B, ..., n) → v's shape.

    Differentiable in ``blocks``; symmetric positive semidefinite in v. Extra middle dimensions
    of v (e.g. the columns of an identity) share their row's network.
    """
    B, L, nb, k, _ = blocks.shape
    h = nb * k
    n = v.shape[-1]
    lead = v.shape[:-1]
    extra = (1,) * (len(lead) - 1)
    last = len(lead)
    inv = torch.argsort(perms, dim=1)
    # unbind once: indexing blocks[:, layer] per layer would make autograd zero-fill a full-size
    # gradient for every layer.
    Ws = [W.reshape(B, *extra, nb, k, k) for W in blocks.unbind(1)]
    z = torch.nn.functional.pad(v, (0, h - n))
    # Row-vector convention: z ← z·B_l applies the transpose of the stored block; any fixed
    # convention works because the product is followed by its own transpose.
    for layer in range(L):  # W: permute, then the block-diagonal matrix
        z = z.index_select(last, perms[layer]).reshape(*lead, nb, 1, k)
        z = (z @ Ws[layer]).reshape(*lead, h)
    for layer in range(L - 1, -1, -1):  # Wᵀ: transposed blocks, then the inverse permutation
        z = (z.reshape(*lead, nb, 1, k) @ Ws[layer].transpose(-1, -2)).reshape(*lead, h)
        z = z.index_select(last, inv[layer])
    return z[..., :n]


class LODOOperator(CurvatureOperator):
    """``P = lr·[I 0]WᵀW[I 0]ᵀ``: the positive semidefinite negative of LODO's step matrix G."""

    def __init__(self, blocks: torch.Tensor, perms: torch.Tensor, lr: float, n: int):
        self.blocks, self.perms, self.lr, self.n = blocks, perms, lr, n
        self.dtype, self.device = blocks.dtype, blocks.device

    @property
    def shape(self):
        return (self.blocks.shape[0], self.n)

    def matvec(self, v):
        return self.lr * apply_network(self.blocks, self.perms, v)

    def dense(self):
        B, N = self.shape
        if N > DENSE_LIMIT:
            raise ShapeError(f"refusing to build a dense {N}x{N} operator; use matvec() for N > {DENSE_LIMIT}")
        eye = torch.eye(N, dtype=self.dtype, device=self.device).expand(B, N, N)
        # Row i of the result is P e_i; P is symmetric, so this is P itself.
        return self.lr * apply_network(self.blocks, self.perms, eye)

    def detach(self):
        return LODOOperator(self.blocks.detach(), self.perms, self.lr, self.n)


class _RowAdam:
    """Adam on a tensor whose first dimension is the batch; element-wise, so rows never mix."""

    def __init__(self, like: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = 0

    def step(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.betas
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad * grad
        mhat = self.m / (1 - b1 ** self.t)
        vhat = self.v / (1 - b2 ** self.t)
        return param - self.lr * mhat / (vhat.sqrt() + self.eps)


def _check_common(lr, meta_lr, beta, layers, block) -> tuple[float, float, float, int, int]:
    lr, meta_lr = _positive("lr", lr), _positive("meta_lr", meta_lr)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0 <= beta < 1):
        raise LSR1Error(f"beta (momentum) must lie in [0, 1), got {beta!r}")
    return lr, meta_lr, float(beta), _positive_int("layers", layers), _positive_int("block", block)


class LODO(Solver):
    """LODO on the batched solver interface (see the module docstring for the conventions).

    Parameters: ``lr`` the initial step scale (G = −lr·I at the start), ``meta_lr`` Adam's
    learning rate for θ, ``beta`` the momentum, ``layers`` and ``block`` the network's depth
    and block size, ``seed`` for the permutations and the initial blocks, ``diagonal`` for
    the LODO-Diagonal ablation.

    ``state`` holds, besides x/f/g: ``theta`` (B, layers, h/k, k, k) or (B, n) when diagonal,
    ``m`` the momentum, and after each step ``hypergrad`` (the hypergradient of that step, before
    Adam used it), ``m_used``, ``x_prev`` and ``theta_prev`` (what the step was made with).
    """

    name = "lodo"

    def __init__(self, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9, layers: int = 16,
                 block: int = 4, seed: int = 0, diagonal: bool = False):
        self.lr, self.meta_lr, self.beta, self.layers, self.block = _check_common(lr, meta_lr, beta, layers, block)
        self.seed, self.diagonal = int(seed), bool(diagonal)
        if self.diagonal:
            self.name = "lodo-diagonal"

    def _init(self, objective):
        x = self.state["x"]
        B, N = x.shape
        if self.diagonal:
            theta = torch.ones(B, N, dtype=x.dtype, device=x.device)
            self.perms = None
        else:
            self.perms, blocks = init_network(N, self.layers, self.block, self.seed, x.dtype, x.device)
            theta = blocks.unsqueeze(0).repeat(B, 1, 1, 1, 1)
        self.state["theta"] = theta
        self.state["m"] = torch.zeros_like(x)
        self._adam = _RowAdam(theta, self.meta_lr)

    def precondition(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``P(θ) v`` (so LODO's step is ``−P(θ) m``); differentiable in θ."""
        if self.diagonal:
            return self.lr * theta * v
        return self.lr * apply_network(theta, self.perms, v)

    def operator(self, theta: torch.Tensor | None = None) -> CurvatureOperator:
        theta = self.state["theta"] if theta is None else theta
        if self.diagonal:
            return Diagonal(self.lr * theta)
        return LODOOperator(theta, self.perms, self.lr, self.state["x"].shape[1])

    def _step(self, objective):
        st = self.state
        st["m"] = self.beta * st["m"] + (1 - self.beta) * st["g"]
        theta = st["theta"]
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            d = self.precondition(th, st["m"])
            x_prev = st["x"]
            self._apply(objective, torch.ones(1, 1, dtype=d.dtype, device=d.device), d.detach())
            # ∂f(x − P(θ)m)/∂θ = −g_newᵀ ∂(P(θ)m)/∂θ, with g_new from the evaluation just made.
            (hg,) = torch.autograd.grad(d, th, grad_outputs=-st["g"])
        hg = torch.nan_to_num(hg)  # a diverged row is frozen by run(); keep its θ finite meanwhile
        st.update(hypergrad=hg, m_used=st["m"].clone(), x_prev=x_prev, theta_prev=theta)
        st["theta"] = self._adam.step(theta, hg)
        d = d.detach()
        return StepInfo(direction=d, step_size=torch.ones(d.shape[0], 1, dtype=d.dtype, device=d.device),
                        operator=self.operator(theta), extras={"hypergrad_norm": hg.flatten(1).norm(dim=1)})

    def freeze_rows(self, rows, x, f, g):
        super().freeze_rows(rows, x, f, g)
        self.state["m"][rows] = 0.0


class LODOOptimizer(torch.optim.Optimizer):
    """LODO for arbitrary parameters, used like ``torch.optim.LBFGS``::

        opt = LODOOptimizer(model.parameters())
        def closure():
            opt.zero_grad(); loss = loss_fn(model(X), y); loss.backward(); return loss
        for _ in range(steps):
            loss = opt.step(closure)

    All parameters are flattened into one vector x. Each ``step`` calls the closure once, at the
    current parameters, and returns that loss. Its gradient serves twice, as in LODO: first as the
    hypergradient of the step that led here (which updates the network with Adam), then folded
    into the momentum for the next step x ← x − P(θ)m. Stochastic closures (a fresh minibatch per
    call) are what LODO is made for. The state (network, Adam moments, momentum, permutations)
    round-trips through ``state_dict``.
    """

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9, layers: int = 16,
                 block: int = 4, seed: int = 0):
        lr, meta_lr, beta, layers, block = _check_common(lr, meta_lr, beta, layers, block)
        defaults = dict(lr=lr, meta_lr=meta_lr, beta=beta, layers=layers, block=block, seed=int(seed))
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise LSR1Error("LODOOptimizer learns one preconditioner over all parameters; pass a single "
                            "parameter group")
        self._params = self.param_groups[0]["params"]
        if not self._params:
            raise LSR1Error("LODOOptimizer got no parameters")

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params])

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
                          for p in self._params])

    def _add_to_params(self, delta: torch.Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for p in self._params:
                k = p.numel()
                p.add_(delta[offset:offset + k].view_as(p).to(p.dtype))
                offset += k

    def _state(self) -> dict:
        st = self.state[self._params[0]]
        if not st:
            grp = self.param_groups[0]
            x = self._flat_params()
            perms, blocks = init_network(x.numel(), grp["layers"], grp["block"], grp["seed"], x.dtype, x.device)
            st.update(perms=perms, theta=blocks.unsqueeze(0), adam_m=torch.zeros_like(blocks).unsqueeze(0),
                      adam_v=torch.zeros_like(blocks).unsqueeze(0), momentum=torch.zeros_like(x),
                      pending=torch.zeros_like(x), step=torch.zeros((), dtype=torch.float64))
        # Optimizer.load_state_dict casts every state tensor of a floating parameter to its dtype.
        st["perms"] = st["perms"].long()
        return st

    @torch.no_grad()
    def step(self, closure):  # noqa: D102 — documented in the class
        if closure is None:
            raise LSR1Error("LODOOptimizer.step needs a closure that re-evaluates the loss and calls backward()")
        grp = self.param_groups[0]
        st = self._state()
        with torch.enable_grad():
            loss = closure()
        g = self._flat_grad().to(st["momentum"].dtype)
        if not torch.isfinite(g).all():
            raise LSR1Error("the gradient is not finite; LODOOptimizer stopped before changing the parameters")
        lr = grp["lr"]
        if int(st["step"]) > 0:
            # Hypergradient of the previous step x ← x − lr·A(θ)m_prev: −g·∂(lr·A(θ)m_prev)/∂θ.
            with torch.enable_grad():
                th = st["theta"].detach().requires_grad_(True)
                d = lr * apply_network(th, st["perms"], st["pending"].unsqueeze(0))
                (hg,) = torch.autograd.grad(d, th, grad_outputs=-g.unsqueeze(0))
            b1, b2 = 0.9, 0.999
            t = int(st["step"])
            # No in-place updates: a state loaded from another optimizer's state_dict may share tensors.
            st["adam_m"] = b1 * st["adam_m"] + (1 - b1) * hg
            st["adam_v"] = b2 * st["adam_v"] + (1 - b2) * hg * hg
            mhat = st["adam_m"] / (1 - b1 ** t)
            vhat = st["adam_v"] / (1 - b2 ** t)
            st["theta"] = st["theta"] - grp["meta_lr"] * mhat / (vhat.sqrt() + 1e-8)
        st["momentum"] = grp["beta"] * st["momentum"] + (1 - grp["beta"]) * g
        d = lr * apply_network(st["theta"], st["perms"], st["momentum"].unsqueeze(0))[0]
        self._add_to_params(-d)
        st["pending"] = st["momentum"]
        st["step"] = st["step"] + 1
        return loss


__all__ = ["LODO", "LODOOperator", "LODOOptimizer", "apply_network", "init_network", "hidden_width"]
