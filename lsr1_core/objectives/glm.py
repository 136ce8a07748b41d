"""Two more families of models fitted to badly scaled data, one data set per batch row (issue 22's learning
families, beside :mod:`lsr1_core.objectives.logistic`):

* :class:`BatchedLeastSquares` — ridge regression, f_b(w) = (1/2m)‖A_b w − t_b‖² + (λ/2)‖w‖² (a convex
  quadratic; f* by a linear solve);
* :class:`BatchedSoftmax` — multinomial logistic (softmax) regression with K classes, f_b(W) = (1/m) Σ_j
  [logsumexp(W a_j) − (W a_j)_{y_j}] + (λ/2)‖W‖² over the flattened K × n weights (f* by damped Newton).

As in the logistic family, column i of each design is scaled by 10^{u_i}, u_i ~ U(±decades/2): what a user who
does not standardise their features hands an optimizer. Every coordinate carries its own scale, which a diagonal
metric learned for the family can undo (lsr1_core.meta.scalars).
"""
from __future__ import annotations

import torch

from ..errors import LSR1Error
from .base import Objective, check_batch
from .logistic import _newton, scaled_design as _scaled_design


class BatchedLeastSquares(Objective):
    """Ridge regression with per-row data: A (B, m, n), targets t (B, m), λ > 0."""

    convex = True

    def __init__(self, A: torch.Tensor, t: torch.Tensor, lam: float = 1e-3):
        if A.dim() != 3 or t.shape != A.shape[:2]:
            raise LSR1Error(f"A must be (B, m, n) and t (B, m); got {tuple(A.shape)} and {tuple(t.shape)}")
        if not (isinstance(lam, (int, float)) and lam > 0):
            raise LSR1Error(f"lam must be a positive number, got {lam!r}")
        self.A, self.t, self.lam = A, t.to(A.dtype), float(lam)
        self.batch, self.dim, self.m = A.shape[0], A.shape[2], A.shape[1]
        self.name = f"least_squares_n{self.dim}"

    def check(self, x):
        check_batch(x, self.dim, self.batch)

    def value(self, x):
        self.check(x)
        r = torch.einsum("bmn,bn->bm", self.A.to(x), x) - self.t.to(x)
        return 0.5 * (r * r).sum(-1) / self.m + 0.5 * self.lam * (x * x).sum(-1)

    def value_and_grad(self, x):
        if x.requires_grad:
            return super().value_and_grad(x)
        self.check(x)
        A = self.A.to(x)
        r = torch.einsum("bmn,bn->bm", A, x) - self.t.to(x)
        f = 0.5 * (r * r).sum(-1) / self.m + 0.5 * self.lam * (x * x).sum(-1)
        return f, torch.einsum("bmn,bm->bn", A, r) / self.m + self.lam * x

    def hessian(self, x):
        self.check(x)
        A = self.A.to(x)
        return torch.einsum("bmi,bmj->bij", A, A) / self.m + self.lam * torch.eye(self.dim, dtype=x.dtype)

    def minimizer(self):
        A = self.A
        H = torch.einsum("bmi,bmj->bij", A, A) / self.m + self.lam * torch.eye(self.dim, dtype=A.dtype)
        rhs = torch.einsum("bmn,bm->bn", A, self.t) / self.m
        return torch.linalg.solve(H, rhs.unsqueeze(-1)).squeeze(-1)

    def min_value(self):
        return self.value(self.minimizer()).detach()


def least_squares_family(batch: int, generator: torch.Generator, n: int = 50, m: int = 200, decades: float = 3.0,
                         lam: float = 1e-3, noise: float = 0.5):
    """``batch`` ridge regressions on badly scaled data and starts x0 ~ N(0, I): (objective, x0)."""
    A, cols = _scaled_design(batch, m, n, decades, generator)
    w = torch.randn(batch, n, generator=generator, dtype=torch.float64) / cols.squeeze(1)
    z = torch.einsum("bmn,bn->bm", A, w)
    t = z + noise * z.std(dim=-1, keepdim=True) * torch.randn(batch, m, generator=generator, dtype=torch.float64)
    x0 = torch.randn(batch, n, generator=generator, dtype=torch.float64)
    return BatchedLeastSquares(A, t, lam), x0


class BatchedSoftmax(Objective):
    """Softmax regression with per-row data: A (B, m, n), labels y (B, m) in 0 … K−1, λ > 0; x is the flattened
    (K, n) weight matrix."""

    convex = True

    def __init__(self, A: torch.Tensor, y: torch.Tensor, classes: int, lam: float = 1e-3):
        if A.dim() != 3 or y.shape != A.shape[:2]:
            raise LSR1Error(f"A must be (B, m, n) and y (B, m); got {tuple(A.shape)} and {tuple(y.shape)}")
        if not (isinstance(classes, int) and classes >= 2):
            raise LSR1Error(f"classes must be an integer ≥ 2, got {classes!r}")
        if not (isinstance(lam, (int, float)) and lam > 0):
            raise LSR1Error(f"lam must be a positive number, got {lam!r}")
        self.A, self.y, self.K, self.lam = A, y.long(), classes, float(lam)
        self.batch, self.n, self.m = A.shape[0], A.shape[2], A.shape[1]
        self.dim = classes * self.n
        self.name = f"softmax_k{classes}_n{self.n}"
        self._xstar: torch.Tensor | None = None

    def check(self, x):
        check_batch(x, self.dim, self.batch)

    def _logits(self, x):
        W = x.reshape(x.shape[0], self.K, self.n)
        return torch.einsum("bmn,bkn->bmk", self.A.to(x), W)

    def value(self, x):
        self.check(x)
        z = self._logits(x)
        picked = z.gather(-1, self.y.unsqueeze(-1)).squeeze(-1)
        return (torch.logsumexp(z, -1) - picked).mean(-1) + 0.5 * self.lam * (x * x).sum(-1)

    def value_and_grad(self, x):
        if x.requires_grad:
            return super().value_and_grad(x)
        self.check(x)
        z = self._logits(x)
        picked = z.gather(-1, self.y.unsqueeze(-1)).squeeze(-1)
        f = (torch.logsumexp(z, -1) - picked).mean(-1) + 0.5 * self.lam * (x * x).sum(-1)
        P = torch.softmax(z, -1) - torch.nn.functional.one_hot(self.y, self.K).to(x)
        G = torch.einsum("bmk,bmn->bkn", P, self.A.to(x)) / self.m
        return f, G.reshape(x.shape[0], -1) + self.lam * x

    def hessian(self, x):
        self.check(x)
        z = self._logits(x)
        p = torch.softmax(z, -1)
        A = self.A.to(x)
        S = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (B, m, K, K)
        H = torch.einsum("bmkl,bmi,bmj->bkilj", S, A, A) / self.m
        H = H.reshape(x.shape[0], self.dim, self.dim)
        return H + self.lam * torch.eye(self.dim, dtype=x.dtype)

    def to(self, device=None, dtype=None):
        out = BatchedSoftmax(self.A.to(device=device, dtype=dtype), self.y.to(device=device), self.K, self.lam)
        out._xstar = self._xstar
        return out

    def minimizer(self, gtol: float = 1e-13, iters: int = 100):
        if self._xstar is None:
            self._xstar = _newton(self, torch.zeros(self.batch, self.dim, dtype=torch.float64), gtol, iters)
        return self._xstar.clone()

    def min_value(self):
        return self.value(self.minimizer().to(self.A.dtype)).detach()


def softmax_family(batch: int, generator: torch.Generator, n: int = 20, classes: int = 5, m: int = 200,
                   decades: float = 3.0, lam: float = 1e-3, noise: float = 0.5):
    """``batch`` softmax regressions (K = ``classes``) on badly scaled data and starts x0 ~ N(0, I)."""
    A, cols = _scaled_design(batch, m, n, decades, generator)
    W = torch.randn(batch, classes, n, generator=generator, dtype=torch.float64) / cols
    z = torch.einsum("bmn,bkn->bmk", A, W)
    z = z + noise * z.std(dim=(-2, -1), keepdim=True) * torch.randn(batch, m, classes, generator=generator,
                                                                    dtype=torch.float64)
    y = z.argmax(-1)
    x0 = torch.randn(batch, classes * n, generator=generator, dtype=torch.float64)
    return BatchedSoftmax(A, y, classes, lam), x0
