"""How well a solver's curvature model matches the true one."""
from __future__ import annotations

import torch

from ..objectives.base import Objective
from ..operators import CurvatureOperator
from ..trace import Trace


def cosine_to_newton(direction: torch.Tensor, newton: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B,) between each row's direction and the Newton direction H⁻¹g.

    Both follow the convention x_new = x − α·d, so +1 means the same direction as Newton's.
    Rows where either vector is zero give 0.
    """
    num = (direction * newton).sum(-1)
    den = direction.norm(dim=-1) * newton.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def secant_residual(B: CurvatureOperator | torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Relative secant residual ‖p − Bq‖ / ‖p‖ per row; ``B`` is an operator or dense (B, N, N)."""
    Bq = torch.einsum("bij,bj->bi", B, q) if isinstance(B, torch.Tensor) else B.matvec(q)
    return (p - Bq).norm(dim=-1) / p.norm(dim=-1).clamp_min(1e-300)


def trace_newton_cosines(trace: Trace, objective: Objective) -> torch.Tensor:
    """(T, B): cosine of each step's direction to the Newton direction at the point it left."""
    if trace.d.shape[0] != trace.steps:
        raise ValueError("the trace was recorded without per-step vectors (record_vectors=False)")
    out = []
    for k in range(trace.steps):
        nd = objective.newton_direction(trace.x[k])
        out.append(cosine_to_newton(trace.d[k], nd))
    return torch.stack(out)


def trace_secant_residuals(trace: Trace) -> torch.Tensor:
    """(T, B): ‖p_k − B_k q_k‖/‖p_k‖ with B_k the operator that produced step k; NaN without one."""
    T, B = trace.steps, trace.batch
    out = torch.full((T, B), float("nan"), dtype=trace.f.dtype)
    for k, op in enumerate(trace.operators):
        if op is None or trace.x.shape[0] != T + 1:
            continue
        p = trace.x[k + 1] - trace.x[k]
        q = trace.g[k + 1] - trace.g[k]
        lin = getattr(op, "linear_matvec", None)
        Bq = lin(q) if lin is not None else op.matvec(q)
        out[k] = ((p - Bq).norm(dim=-1) / p.norm(dim=-1).clamp_min(1e-300)).cpu()
    return out


def eigen_comparison(op: CurvatureOperator, objective: Objective, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eigenvalues (B, N), ascending, of the solver's inverse-Hessian approximation and of the true
    inverse Hessian at ``x`` (pseudo-inverse where singular; indefinite Hessians give negative ones)."""
    approx = op.eigvalsh()
    ev = torch.linalg.eigvalsh(objective.hessian(x))
    inv = torch.where(ev.abs() > 1e-12, 1.0 / ev, torch.zeros_like(ev))
    return {"approx": approx, "true_inverse": torch.sort(inv, dim=-1).values}
