"""A family of L2-regularised logistic regressions on badly scaled data, one data set per batch row.

f_b(w) = (1/m) Σ_j log(1 + exp(−y_bj a_bjᵀw)) + (λ/2)‖w‖²

Each row b has its own m × n design A_b whose columns are scaled by 10^{u_i}, u_i uniform in ±``decades``/2
(so the curvature spans about 10^{2·decades} times the regulariser's), and its own labels
y = sign(A_b w_true + noise) (noisy, not separable). The objective is convex with an analytic gradient and
Hessian; :meth:`BatchedLogistic.minimizer` solves every row to ‖∇f‖ ≈ 10⁻¹³ by a damped Newton method (batched, in
float64) once, so f* is known to rounding. :func:`logistic_family` draws a batch of problems and starts from a
seeded generator (used by the headroom benchmark, experiments.headroom). The older
``experiments.extra_functions.LogisticRegression`` (the generality report's) is a single fixed data set shared
by every row.
"""
from __future__ import annotations

import torch

from ..errors import LSR1Error
from .base import Objective, check_batch


def _log1pexp(t: torch.Tensor) -> torch.Tensor:
    """log(1 + eᵗ) to full precision everywhere (torch's softplus switches to t beyond 20, an error of 2·10⁻⁹)."""
    return torch.logaddexp(torch.zeros_like(t), t)


class BatchedLogistic(Objective):
    """Logistic regression with per-row data: A (B, m, n), y (B, m) in {−1, +1}, regulariser λ > 0."""

    convex = True

    def __init__(self, A: torch.Tensor, y: torch.Tensor, lam: float = 1e-3, name: str = "logistic"):
        if A.dim() != 3 or y.shape != A.shape[:2]:
            raise LSR1Error(f"A must be (B, m, n) and y (B, m); got {tuple(A.shape)} and {tuple(y.shape)}")
        if not (isinstance(lam, (int, float)) and lam > 0):
            raise LSR1Error(f"lam must be a positive number (it makes the minimiser unique), got {lam!r}")
        self.A, self.y, self.lam = A, y.to(A.dtype), float(lam)
        self.batch, self.dim = A.shape[0], A.shape[2]
        self.name = f"{name}_n{self.dim}"
        self._xstar: torch.Tensor | None = None

    def check(self, x):
        check_batch(x, self.dim, self.batch)

    def _margins(self, x):
        return torch.einsum("bmn,bn->bm", self.A.to(x), x) * self.y.to(x)  # y·aᵀw

    def value(self, x):
        self.check(x)
        z = self._margins(x)
        return _log1pexp(-z).mean(-1) + 0.5 * self.lam * (x * x).sum(-1)

    def value_and_grad(self, x):
        if x.requires_grad:  # keep the graph for meta-gradients
            return super().value_and_grad(x)
        self.check(x)
        z = self._margins(x)
        f = _log1pexp(-z).mean(-1) + 0.5 * self.lam * (x * x).sum(-1)
        s = torch.sigmoid(-z) * self.y.to(x)  # −∂/∂(aᵀw) of the loss, per sample
        g = -torch.einsum("bmn,bm->bn", self.A.to(x), s) / z.shape[-1] + self.lam * x
        return f, g

    def hessian(self, x):
        self.check(x)
        z = self._margins(x)
        w = torch.sigmoid(z) * torch.sigmoid(-z) / z.shape[-1]
        A = self.A.to(x)
        H = torch.einsum("bmi,bm,bmj->bij", A, w, A)
        return H + self.lam * torch.eye(self.dim, dtype=x.dtype, device=x.device)

    def hvp(self, x, v):
        z = self._margins(x)
        w = torch.sigmoid(z) * torch.sigmoid(-z) / z.shape[-1]
        A = self.A.to(x)
        return torch.einsum("bmn,bm->bn", A, w * torch.einsum("bmn,bn->bm", A, v)) + self.lam * v

    def minimizer(self, gtol: float = 1e-13, iters: int = 100) -> torch.Tensor:
        """(B, n) minimisers by damped Newton with Armijo backtracking (float64), computed once."""
        if self._xstar is None:
            self._xstar = _newton(self, torch.zeros(self.batch, self.dim, dtype=torch.float64,
                                                    device=self.A.device), gtol, iters)
        return self._xstar.clone()

    def min_value(self):
        return self.value(self.minimizer().to(self.A.dtype)).detach()

    def to(self, device=None, dtype=None):
        out = BatchedLogistic(self.A.to(device=device, dtype=dtype), self.y.to(device=device, dtype=dtype),
                              self.lam)
        out.name = self.name
        if self._xstar is not None:
            out._xstar = self._xstar.to(device=device)
        return out


def _newton(obj: BatchedLogistic, x: torch.Tensor, gtol: float, iters: int) -> torch.Tensor:
    A64 = obj.to(dtype=torch.float64)
    x = x.to(torch.float64)
    for _ in range(iters):
        f, g = A64.value_and_grad(x)
        gn = g.norm(dim=-1)
        if bool((gn <= gtol * torch.clamp(f.abs(), min=1.0)).all()):
            break
        H = A64.hessian(x)
        d = torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)
        t = torch.ones_like(f)
        slope = (g * d).sum(-1)
        for _ in range(60):
            ft = A64.value(x - t.unsqueeze(-1) * d)
            # near x* a decrease of f falls below rounding: accept a step that does not raise f beyond it
            ok = (ft <= f - 1e-4 * t * slope) | (ft <= f + 16 * torch.finfo(f.dtype).eps * f.abs())
            if bool(ok.all()):
                break
            t = torch.where(ok, t, 0.5 * t)
        x = x - t.unsqueeze(-1) * d
    return x


def scaled_design(batch: int, m: int, n: int, decades: float, generator: torch.Generator):
    """(A (B, m, n), column scales (B, 1, n)): a ~ N(0, I) with column i scaled by 10^{u_i}, u_i ~ U(±decades/2)."""
    if not all(isinstance(v, int) and v >= 1 for v in (batch, n, m)):
        raise LSR1Error(f"batch, n and m must be positive integers, got {batch}, {n}, {m}")
    if not decades >= 0:
        raise LSR1Error(f"decades must be non-negative, got {decades!r}")
    u = (torch.rand(batch, 1, n, generator=generator, dtype=torch.float64) - 0.5) * decades
    cols = 10 ** u
    return torch.randn(batch, m, n, generator=generator, dtype=torch.float64) * cols, cols


def logistic_family(batch: int, generator: torch.Generator, n: int = 50, m: int = 200, decades: float = 3.0,
                    lam: float = 1e-3, noise: float = 0.5, start_scale: float = 1.0, dtype=torch.float64
                    ) -> tuple[BatchedLogistic, torch.Tensor]:
    """``batch`` logistic regressions on badly scaled data and a start for each (x0 ~ N(0, start_scale²·I)).

    Per row: a ~ N(0, I) with column i scaled by 10^{u_i}, u_i ~ U(±decades/2); w_true ~ N(0, I) divided by the
    column scales (so every feature matters); y = sign(aᵀw_true + noise·std·N(0, 1))."""
    A, cols = scaled_design(batch, m, n, decades, generator)
    w = torch.randn(batch, n, generator=generator, dtype=torch.float64) / cols.squeeze(1)
    z = torch.einsum("bmn,bn->bm", A, w)
    z = z + noise * z.std(dim=-1, keepdim=True) * torch.randn(batch, m, generator=generator, dtype=torch.float64)
    y = torch.where(z >= 0, 1.0, -1.0).to(torch.float64)
    x0 = start_scale * torch.randn(batch, n, generator=generator, dtype=torch.float64)
    obj = BatchedLogistic(A.to(dtype), y.to(dtype), lam)
    return obj, x0.to(dtype)
