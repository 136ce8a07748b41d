"""The PSD lesson: classical SR1 going indefinite and uphill, next to L-SR1's I + Σ vvᵀ."""
from __future__ import annotations

import numpy as np
import torch

from ..objectives import teaching_function
from ..solvers import make_solver, run


def sr1_indefinite_example(function: str = "himmelblau", start=(-0.5, -0.5), steps: int = 15) -> dict | None:
    """Run classical SR1 and return the first step whose matrix is indefinite and whose direction
    goes uphill (gᵀd < 0 with x_new = x − d), with the numbers needed to show it; None if none happens."""
    obj = teaching_function(function)
    tr = run(make_solver("sr1", memory=8), obj, torch.tensor([start], dtype=torch.float64), steps)
    for k in range(tr.steps):
        op = tr.operators[k]
        M = op.dense()[0].numpy()
        w = np.linalg.eigvalsh(0.5 * (M + M.T))
        g = tr.g[k, 0].numpy()
        d = tr.d[k, 0].numpy()
        if w[0] < 0 and float(g @ d) < 0:
            return {"function": function, "step": k + 1, "x": tr.x[k, 0].numpy(), "B": M, "eig": w, "g": g, "d": d,
                    "f_before": float(tr.f[k, 0]), "f_after": float(tr.f[k + 1, 0]), "trace": tr}
    return None


def lsr1_matrix_from_vectors(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """I + Σ v vᵀ and its eigenvalues (all ≥ 1) for vectors (L, N)."""
    n = vectors.shape[1]
    M = np.eye(n) + vectors.T @ vectors
    return M, np.linalg.eigvalsh(M)
