"""Curvature operators: the inverse-Hessian approximations that quasi-Newton solvers build.

Every operator acts on a batch: ``matvec(v)`` maps ``(B, N)`` to ``(B, N)``. A solver's
direction is ``d = op.matvec(g)`` and its step ``x - α ⊙ d``. ``dense()`` materialises the
``(B, N, N)`` matrix and is meant for small N (analysis and plots), never for stepping.
"""
from __future__ import annotations

import torch

from .errors import ShapeError

DENSE_LIMIT = 4096


class CurvatureOperator:
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def dense(self) -> torch.Tensor:
        B, N = self.shape
        if N > DENSE_LIMIT:
            raise ShapeError(f"refusing to build a dense {N}x{N} operator; use matvec() for N > {DENSE_LIMIT}")
        eye = torch.eye(N, dtype=self.dtype, device=self.device)
        cols = [self.matvec(eye[i].expand(B, N)) for i in range(N)]
        return torch.stack(cols, dim=2)

    def eigvalsh(self) -> torch.Tensor:
        """Eigenvalues ``(B, N)`` in ascending order of the symmetrised dense matrix."""
        M = self.dense()
        return torch.linalg.eigvalsh(0.5 * (M + M.transpose(1, 2)))

    def detach(self) -> "CurvatureOperator":
        return self


class ScaledIdentity(CurvatureOperator):
    def __init__(self, scale: torch.Tensor | float, batch: int, n: int, dtype=torch.float64, device=None):
        self.scale = torch.as_tensor(scale, dtype=dtype, device=device).reshape(-1, 1).expand(batch, 1)
        self._shape = (batch, n)
        self.dtype, self.device = dtype, device

    @property
    def shape(self):
        return self._shape

    def matvec(self, v):
        return self.scale.to(v) * v

    def dense(self):
        B, N = self._shape
        return self.scale.view(B, 1, 1) * torch.eye(N, dtype=self.dtype, device=self.device).expand(B, N, N)


class Diagonal(CurvatureOperator):
    def __init__(self, diag: torch.Tensor):
        self.diag = diag
        self.dtype, self.device = diag.dtype, diag.device

    @property
    def shape(self):
        return tuple(self.diag.shape)

    def matvec(self, v):
        return self.diag * v

    def dense(self):
        return torch.diag_embed(self.diag)

    def eigvalsh(self):
        return torch.sort(self.diag, dim=-1).values

    def detach(self):
        return Diagonal(self.diag.detach())


class Dense(CurvatureOperator):
    def __init__(self, M: torch.Tensor):
        self.M = M
        self.dtype, self.device = M.dtype, M.device

    @property
    def shape(self):
        return (self.M.shape[0], self.M.shape[1])

    def matvec(self, v):
        return torch.einsum("bij,bj->bi", self.M, v)

    def dense(self):
        return self.M

    def detach(self):
        return Dense(self.M.detach())


class LowRank(CurvatureOperator):
    """``s·I + Σ_i c_i w_i w_iᵀ`` with ``W`` of shape (B, L, N), ``c`` (B, L) and ``s`` (B, 1).

    L-SR1's B̃ is the case s = 1, c = 1; classical limited-memory SR1 has c_i = 1/(w_iᵀq_i),
    which may be negative (the operator may be indefinite). ``rescale_to`` (B, 1) optionally
    rescales each output row to a given norm (the authors' code rescales B̃g to ‖g‖).
    """

    def __init__(self, W: torch.Tensor, c: torch.Tensor | None = None, s: torch.Tensor | float = 1.0):
        self.W = W
        B, L, N = W.shape
        self.c = torch.ones(B, L, dtype=W.dtype, device=W.device) if c is None else c
        self.s = torch.as_tensor(s, dtype=W.dtype, device=W.device).reshape(-1, 1).expand(B, 1)
        self.dtype, self.device = W.dtype, W.device

    @property
    def shape(self):
        return (self.W.shape[0], self.W.shape[2])

    def matvec(self, v):
        if self.W.shape[1] == 0:
            return self.s * v
        coef = torch.einsum("bln,bn->bl", self.W, v) * self.c
        return self.s * v + torch.einsum("bl,bln->bn", coef, self.W)

    def dense(self):
        B, N = self.shape
        if N > DENSE_LIMIT:
            raise ShapeError(f"refusing to build a dense {N}x{N} operator; use matvec() for N > {DENSE_LIMIT}")
        eye = torch.eye(N, dtype=self.dtype, device=self.device)
        return self.s.view(B, 1, 1) * eye + torch.einsum("bl,bli,blj->bij", self.c, self.W, self.W)

    def detach(self):
        return LowRank(self.W.detach(), self.c.detach(), self.s.detach())


class LBFGSInverse(CurvatureOperator):
    """The L-BFGS inverse-Hessian approximation applied by the two-loop recursion.

    ``S`` and ``Y`` are (B, m, N) with the oldest pair first; ``gamma`` (B, 1) scales H0 = γI.
    Rows with fewer valid pairs carry ``valid`` = False entries that are skipped.
    """

    def __init__(self, S: torch.Tensor, Y: torch.Tensor, valid: torch.Tensor, gamma: torch.Tensor):
        self.S, self.Y, self.valid, self.gamma = S, Y, valid, gamma
        self.dtype, self.device = S.dtype, S.device
        sy = (S * Y).sum(-1)
        self.rho = torch.where(valid, 1.0 / torch.where(valid, sy, torch.ones_like(sy)), torch.zeros_like(sy))

    @property
    def shape(self):
        return (self.S.shape[0], self.S.shape[2])

    def matvec(self, v):
        q = v.clone()
        m = self.S.shape[1]
        alphas = []
        for i in range(m - 1, -1, -1):
            a = self.rho[:, i:i + 1] * (self.S[:, i] * q).sum(-1, keepdim=True)
            q = q - a * self.Y[:, i]
            alphas.append(a)
        r = self.gamma * q
        for i in range(m):
            a = alphas[m - 1 - i]
            bcoef = self.rho[:, i:i + 1] * (self.Y[:, i] * r).sum(-1, keepdim=True)
            r = r + self.S[:, i] * (a - bcoef)
        return r
