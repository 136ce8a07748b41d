"""AdaHessian (Yao et al.): Adam with a Hutchinson estimate of the Hessian diagonal as second moment."""
from __future__ import annotations

import torch

from ..errors import LSR1Error
from ..operators import Diagonal
from .base import Solver, StepInfo


def hutchinson_diagonal(objective, x: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None):
    """Unbiased estimate of diag(H(x)) per row: mean over Rademacher z of z ⊙ (H z)."""
    est = torch.zeros_like(x)
    for _ in range(samples):
        z = torch.randint(0, 2, x.shape, generator=generator, dtype=torch.int64).to(device=x.device, dtype=x.dtype)
        z = 2 * z - 1
        est = est + z * objective.hvp(x, z)
    return est / samples


class AdaHessian(Solver):
    """x ← x − lr · m̂ / ((√v̂)^k + ε), m the EMA of g (β1), v the EMA of D² (β2), D = |z ⊙ Hz|.

    For vectors the AdaHessian paper's spatial averaging does not apply; the absolute value follows it.
    """

    name = "adahessian"

    def __init__(self, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 hessian_power: float = 1.0, samples: int = 1, seed: int = 0):
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise LSR1Error(f"lr must be a positive number, got {lr!r}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise LSR1Error(f"betas must lie in [0, 1), got {betas}")
        if not 0 < hessian_power <= 1:
            raise LSR1Error(f"hessian_power must lie in (0, 1], got {hessian_power}")
        if not isinstance(samples, int) or samples < 1:
            raise LSR1Error(f"samples must be a positive integer, got {samples!r}")
        self.lr, self.betas, self.eps, self.k, self.samples = float(lr), betas, eps, hessian_power, samples
        self.seed = seed

    def _init(self, objective):
        self.generator = torch.Generator().manual_seed(self.seed)
        self.state["m"] = torch.zeros_like(self.state["x"])
        self.state["v"] = torch.zeros_like(self.state["x"])

    def _step(self, objective):
        st, (b1, b2) = self.state, self.betas
        x, g = st["x"], st["g"]
        D = hutchinson_diagonal(objective, x, self.samples, self.generator).abs()
        t = st["k"] + 1
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * D * D
        mhat = st["m"] / (1 - b1 ** t)
        vhat = st["v"] / (1 - b2 ** t)
        precond = 1.0 / (vhat.sqrt() ** self.k + self.eps)
        d = mhat * precond
        a = torch.full((g.shape[0], 1), self.lr, dtype=g.dtype, device=g.device)
        self._apply(objective, a, d)
        return StepInfo(direction=d, step_size=a, operator=Diagonal(precond), evals=1 + self.samples)
