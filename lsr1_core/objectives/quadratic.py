"""Quadratic objectives f(x) = ½ xᵀHx + bᵀx, dense or diagonal, and the paper's generators."""
from __future__ import annotations

import math

import torch

from ..errors import LSR1Error, ShapeError
from .base import check_dense_hessian, Objective, check_batch, solve_or_lstsq


class Quadratic(Objective):
    """Dense quadratic. ``H`` is ``(N, N)`` (shared) or ``(B, N, N)`` (one per problem);
    ``b`` is ``(N,)`` or ``(B, N)``."""

    convex = True

    def __init__(self, H: torch.Tensor, b: torch.Tensor | None = None, name: str = "quadratic"):
        if H.dim() == 2:
            H = H.unsqueeze(0)
        if H.dim() != 3 or H.shape[1] != H.shape[2]:
            raise ShapeError(f"H must be (N, N) or (B, N, N), got {tuple(H.shape)}")
        N = H.shape[-1]
        if b is None:
            b = torch.zeros(H.shape[0], N, dtype=H.dtype, device=H.device)
        if b.dim() == 1:
            b = b.unsqueeze(0)
        if b.shape[-1] != N:
            raise ShapeError(f"b has {b.shape[-1]} entries but H is {N}x{N}")
        self.H = 0.5 * (H + H.transpose(1, 2))
        self.b = b
        self.dim = N
        bh, bb = H.shape[0], b.shape[0]
        self.batch = max(bh, bb) if max(bh, bb) > 1 else None
        self.name = name

    def check(self, x):
        check_batch(x, self.dim)
        if self.batch is not None and x.shape[0] != self.batch:
            raise ShapeError(f"x has batch size {x.shape[0]} but this objective holds {self.batch} quadratics")

    def value(self, x):
        Hx = torch.einsum("bij,bj->bi", self.H.expand(x.shape[0], -1, -1), x)
        return 0.5 * (x * Hx).sum(-1) + (self.b * x).sum(-1)

    def grad(self, x):
        return torch.einsum("bij,bj->bi", self.H.expand(x.shape[0], -1, -1), x) + self.b

    def value_and_grad(self, x):
        Hx = torch.einsum("bij,bj->bi", self.H.expand(x.shape[0], -1, -1), x)
        return 0.5 * (x * Hx).sum(-1) + (self.b * x).sum(-1), Hx + self.b

    def hvp(self, x, v):
        return torch.einsum("bij,bj->bi", self.H.expand(x.shape[0], -1, -1), v)

    def hessian(self, x):
        return self.H.expand(x.shape[0], -1, -1).clone()

    def newton_direction(self, x):
        return solve_or_lstsq(self.hessian(x), self.grad(x).detach())

    def minimizer(self):
        B = max(self.H.shape[0], self.b.shape[0])
        return solve_or_lstsq(self.H.expand(B, -1, -1), -self.b.expand(B, -1))

    def to(self, device=None, dtype=None):
        return Quadratic(self.H.to(device=device, dtype=dtype), self.b.to(device=device, dtype=dtype), self.name)

    def subset(self, idx) -> "Quadratic":
        H = self.H if self.H.shape[0] == 1 else self.H[idx]
        b = self.b if self.b.shape[0] == 1 else self.b[idx]
        return Quadratic(H, b, self.name)


class DiagonalQuadratic(Objective):
    """f(x) = ½ Σ h_i x_i² + bᵀx with ``h`` of shape (N,) or (B, N). O(N) everything."""

    convex = True

    def __init__(self, h: torch.Tensor, b: torch.Tensor | None = None, name: str = "diag_quadratic"):
        if h.dim() == 1:
            h = h.unsqueeze(0)
        if (h < 0).any():
            raise ValueError("diagonal quadratic needs non-negative curvatures h")
        N = h.shape[-1]
        self.h = h
        self.b = torch.zeros_like(h[:1]) if b is None else (b.unsqueeze(0) if b.dim() == 1 else b)
        self.dim = N
        self.batch = None if max(self.h.shape[0], self.b.shape[0]) == 1 else max(self.h.shape[0], self.b.shape[0])
        self.name = name

    def value(self, x):
        return 0.5 * (self.h * x * x).sum(-1) + (self.b * x).sum(-1)

    def grad(self, x):
        return self.h * x + self.b

    def value_and_grad(self, x):
        return self.value(x), self.grad(x)

    def hvp(self, x, v):
        return self.h * v

    def hessian(self, x):
        check_dense_hessian(x)
        return torch.diag_embed(self.h.expand(x.shape[0], -1)).clone()

    def newton_direction(self, x):
        return self.grad(x).detach() / self.h

    def minimizer(self):
        return -self.b / self.h

    def to(self, device=None, dtype=None):
        return DiagonalQuadratic(self.h.to(device=device, dtype=dtype), self.b.to(device=device, dtype=dtype), self.name)


def diagonal_quadratic(n: int, cond: float, dtype=torch.float64, device=None) -> DiagonalQuadratic:
    """Diagonal quadratic with b = 0 and curvatures log-spaced from 1/cond to 1 (largest = 1)."""
    if n < 1:
        raise ShapeError(f"N must be at least 1, got {n}")
    if cond < 1:
        raise ValueError(f"condition number must be >= 1, got {cond}")
    if n == 1:
        h = torch.ones(1, dtype=dtype, device=device)
    else:
        h = torch.logspace(-math.log10(cond), 0.0, n, dtype=dtype, device=device)
    return DiagonalQuadratic(h, None, name=f"diag_quadratic_cond{int(cond)}")


# --------------------------------------------------------------------------
# Random quadratics of the paper's appendix C.2.1
# --------------------------------------------------------------------------
SPLIT_SEEDS = {"validation": 1001, "test": 2002}
SPLIT_DEFAULTS = {"validation": (2, 32), "test": (10, 32)}  # (N, size) from C.2.1


def _finish(H, batch, n, generator, dtype, device, name):
    """Shared last step of the generators: unit Frobenius norm, b ~ N(0, I) of unit norm, x0 ~ N(0, I)."""
    H = H / torch.linalg.matrix_norm(H, ord="fro", dim=(1, 2)).view(-1, 1, 1)
    b = torch.randn(batch, n, generator=generator, dtype=torch.float64)
    b = b / b.norm(dim=1, keepdim=True)
    x0 = torch.randn(batch, n, generator=generator, dtype=torch.float64)
    q = Quadratic(H.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype), name=f"{name}_n{n}")
    return q, x0.to(device=device, dtype=dtype)


def random_quadratics(n: int, batch: int, *, generator: torch.Generator, max_cond: float | None = 1000.0,
                      dtype=torch.float64, device=None) -> tuple[Quadratic, torch.Tensor]:
    """Draw ``batch`` quadratics as in C.2.1 and a start x0 ~ N(0, I) for each.

    H = AᵀA with A ~ N(0, 1)^{N×N}; matrices with condition number above ``max_cond`` are
    rejected and redrawn (``None`` accepts all, as for training batches); H is scaled to unit
    Frobenius norm; b ~ N(0, I) scaled to unit norm. Generated in float64 on the CPU for
    reproducibility across devices, then moved.
    """
    if n < 1:
        raise ShapeError(f"N must be at least 1, got {n}")
    if batch < 1:
        raise ShapeError(f"batch must be at least 1, got {batch}")
    Hs = []
    tries = 0
    while len(Hs) < batch:
        need = batch - len(Hs)
        A = torch.randn(need, n, n, generator=generator, dtype=torch.float64)
        H = A.transpose(1, 2) @ A
        if max_cond is not None:
            ev = torch.linalg.eigvalsh(H)
            cond = ev[:, -1] / ev[:, 0].clamp_min(1e-300)
            H = H[(ev[:, 0] > 0) & (cond <= max_cond)]
        Hs.extend(H.unbind(0))
        tries += 1
        if tries >= 200 and len(Hs) == 0 or tries > 10000:
            raise LSR1Error(f"could not draw {batch} quadratics H = AᵀA with condition number <= {max_cond} at "
                            f"N = {n} (accepted {len(Hs)} after {tries} rounds): the condition number of AᵀA "
                            f"grows like N², so use max_cond=None for N above about 20")
    H = torch.stack(Hs[:batch])
    return _finish(H, batch, n, generator, dtype, device, "random_quadratic")


def spectrum_quadratics(n: int, batch: int, *, generator: torch.Generator, max_cond: float = 1000.0,
                        dtype=torch.float64, device=None) -> tuple[Quadratic, torch.Tensor]:
    """Quadratics with a controlled spectrum at any N: H = Q diag(λ) Qᵀ, Q Haar-random orthogonal,
    log10 λ uniform on [−log10 max_cond, 0] (so cond ≤ max_cond), then unit Frobenius norm; b and x0 as in
    C.2.1. Used where the paper's AᵀA with a condition filter cannot be drawn (N above about 20)."""
    if n < 1 or batch < 1:
        raise ShapeError(f"N and batch must be at least 1, got N = {n}, batch = {batch}")
    G = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)
    Q = Q * torch.sign(torch.diagonal(R, dim1=1, dim2=2)).unsqueeze(1)
    lam = 10 ** (-torch.rand(batch, n, generator=generator, dtype=torch.float64) * torch.log10(torch.tensor(max_cond)))
    H = Q @ torch.diag_embed(lam) @ Q.transpose(1, 2)
    return _finish(H, batch, n, generator, dtype, device, "spectrum_quadratic")


COND_FILTER_MAX_N = 20


def quadratic_split(split: str, n: int | None = None, size: int | None = None, dtype=torch.float64,
                    device=None, max_cond: float | None | str = "auto") -> tuple[Quadratic, torch.Tensor]:
    """The fixed validation or test set of C.2.1 (validation N=2, test N=10, 32 each by default).

    The seed depends only on the split and N, so the same call always gives the same problems.
    ``max_cond="auto"`` applies the paper's condition filter (≤ 1000) up to N = 20; above that almost no
    AᵀA passes it (its condition number grows like N²), so larger sets are drawn unfiltered.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose 'validation' or 'test' (training batches come from "
                         f"QuadraticSampler)")
    dn, ds = SPLIT_DEFAULTS[split]
    n = dn if n is None else n
    size = ds if size is None else size
    if max_cond == "auto":
        max_cond = 1000.0 if n <= COND_FILTER_MAX_N else None
    g = torch.Generator().manual_seed(SPLIT_SEEDS[split] * 100003 + n)
    return random_quadratics(n, size, generator=g, max_cond=max_cond, dtype=dtype, device=device)


class QuadraticSampler:
    """A seeded stream of training batches (no condition filter, as in C.2.1)."""

    def __init__(self, n: int = 2, batch: int = 128, seed: int = 0, dtype=torch.float32, device=None):
        self.n, self.batch, self.dtype, self.device = n, batch, dtype, device
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> tuple[Quadratic, torch.Tensor]:
        return random_quadratics(self.n, self.batch, generator=self.generator, max_cond=None,
                                 dtype=self.dtype, device=self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
