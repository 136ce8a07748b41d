"""The objective interface shared by every solver.

An objective maps a batch ``x`` of shape ``(B, N)`` to values of shape ``(B,)``.
It also gives gradients ``(B, N)``, Hessians ``(B, N, N)``, Hessian-vector
products, the Newton direction ``H^{-1} g`` (so that ``x - d`` is the Newton
step) and, where known, the global minimiser.

Gradients are computed with differentiable torch operations, so a meta-learner
can back-propagate through them; objectives without an analytic gradient fall
back to autograd (with ``create_graph=True`` when the input requires grad).
"""
from __future__ import annotations

import math

import torch

from ..errors import NonFiniteError, ShapeError


def check_batch(x: torch.Tensor, dim: int | None = None, batch: int | None = None, what: str = "x") -> None:
    """Raise a clear error unless ``x`` is a floating tensor of shape (B, N)."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{what} must be a torch.Tensor of shape (B, N), got {type(x).__name__}")
    if x.dim() != 2:
        raise ShapeError(f"{what} must have shape (B, N) (a batch of points), got shape {tuple(x.shape)}; "
                         f"use x.unsqueeze(0) for a single point")
    if not x.is_floating_point():
        raise ShapeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[1] < 1:
        raise ShapeError(f"{what} has N = {x.shape[1]} coordinates; N must be at least 1")
    if dim is not None and x.shape[1] != dim:
        raise ShapeError(f"{what} has N = {x.shape[1]} coordinates but the objective is {dim}-dimensional")
    if batch is not None and x.shape[0] not in (batch,):
        raise ShapeError(f"{what} has batch size {x.shape[0]} but the objective holds {batch} problems")


DENSE_HESSIAN_LIMIT = 4096


def check_dense_hessian(x: torch.Tensor) -> None:
    """Refuse a dense (B, N, N) Hessian that would not fit: use hvp() at large N."""
    N = x.shape[-1]
    if N > DENSE_HESSIAN_LIMIT:
        gb = x.shape[0] * N * N * x.element_size() / 1e9
        raise ShapeError(f"a dense Hessian at N = {N} would hold {N * N} entries per problem ({gb:.3g} GB for this "
                         f"batch); use hvp() for N > {DENSE_HESSIAN_LIMIT}")


def check_finite(x: torch.Tensor, what: str = "starting point") -> None:
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = torch.nonzero(bad.reshape(x.shape[0], -1).any(dim=1)).flatten().tolist()
        raise NonFiniteError(f"{what} contains NaN or infinity (batch rows {rows[:10]}{'...' if len(rows) > 10 else ''})")


class Objective:
    """Base class. Subclasses implement :meth:`value` and, ideally, :meth:`grad`.

    Attributes
    ----------
    name: short identifier used in traces and tables.
    dim: N, or ``None`` for objectives defined in any dimension.
    batch: the number of distinct problems held (e.g. 32 random quadratics),
        or ``None`` when the same function applies to any batch.
    """

    name: str = "objective"
    dim: int | None = None
    batch: int | None = None
    convex: bool = False

    # --- to implement -------------------------------------------------------
    def value(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- defaults via autograd ---------------------------------------------
    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.value_and_grad(x)[1]

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        create = x.requires_grad
        with torch.enable_grad():
            xx = x if x.requires_grad else x.detach().requires_grad_(True)
            f = self.value(xx)
            (g,) = torch.autograd.grad(f.sum(), xx, create_graph=create)
        return (f if create else f.detach()), g

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Hessian-vector product ``H(x) v`` for each batch row."""
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            _, g = self._grad_with_graph(xx)
            (hv,) = torch.autograd.grad((g * v).sum(), xx)
        return hv

    def _grad_with_graph(self, xx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.value(xx)
        (g,) = torch.autograd.grad(f.sum(), xx, create_graph=True)
        return f, g

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """Dense Hessians ``(B, N, N)``. The default uses N Hessian-vector products."""
        check_batch(x, self.dim)
        B, N = x.shape
        check_dense_hessian(x)
        eye = torch.eye(N, dtype=x.dtype, device=x.device)
        cols = [self.hvp(x, eye[i].expand(B, N)) for i in range(N)]
        H = torch.stack(cols, dim=2)
        return 0.5 * (H + H.transpose(1, 2))

    def newton_direction(self, x: torch.Tensor) -> torch.Tensor:
        """``H(x)^{-1} g(x)``: the Newton step is ``x - newton_direction(x)``.

        Uses a least-squares solve where the Hessian is singular.
        """
        g = self.grad(x).detach()
        H = self.hessian(x.detach())
        return solve_or_lstsq(H, g)

    def minimizer(self) -> torch.Tensor | None:
        """The global minimiser ``(B, N)`` or ``(1, N)`` when known, else ``None``."""
        return None

    def min_value(self) -> torch.Tensor | None:
        xs = self.minimizer()
        return None if xs is None else self.value(xs)

    # --- helpers ------------------------------------------------------------
    def to(self, device=None, dtype=None) -> "Objective":
        """Return a copy on another device/dtype (objectives without tensors return self)."""
        return self

    def check(self, x: torch.Tensor) -> None:
        check_batch(x, self.dim, self.batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, batch={self.batch})"


def solve_or_lstsq(H: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Solve ``H d = g`` per batch row; fall back to least squares for singular H."""
    try:
        sol, info = torch.linalg.solve_ex(H, g.unsqueeze(-1))
    except RuntimeError:  # some LAPACK builds raise on an exactly singular pivot instead of reporting it
        sol, info = torch.zeros_like(g).unsqueeze(-1), torch.ones(g.shape[0], dtype=torch.int32, device=g.device)
    sol = sol.squeeze(-1)
    bad = (info != 0) | ~torch.isfinite(sol).all(dim=-1)
    if bad.any():
        ls = torch.linalg.pinv(H[bad]) @ g[bad].unsqueeze(-1)
        sol = sol.clone()
        sol[bad] = ls.squeeze(-1)
    return sol


def rotation_2d(angle_rad: float) -> torch.Tensor:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
