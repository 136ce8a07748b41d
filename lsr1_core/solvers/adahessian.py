"""AdaHessian (Yao et al., 2021): Adam with a Hutchinson estimate of the Hessian diagonal as second moment.

    solver = AdaHessian(lr=0.1, n_samples=1, seed=0)

Per step: D = |z ⊙ H z| averaged over ``n_samples`` Rademacher probes z (one ``objective.hvp`` each),
m ← β1 m + (1 − β1) g, v ← β2 v + (1 − β2) D², bias-corrected m̂, v̂, and
x ← x − lr · m̂ / ((√v̂)^k + ε) with k = hessian_power. For a vector of parameters the paper's spatial
averaging (over a convolution kernel) does not apply; the absolute value follows the paper.
"""
from __future__ import annotations

import math

import torch

from ..errors import LSR1Error
from ..operators import Diagonal
from .base import Solver, StepInfo


def rademacher(shape, generator: torch.Generator | None = None, dtype=torch.float64, device=None) -> torch.Tensor:
    """±1 entries with equal probability, drawn on the CPU from ``generator`` (reproducible on any device)."""
    z = torch.randint(0, 2, tuple(shape), generator=generator, dtype=torch.int64)
    return (2 * z - 1).to(device=device, dtype=dtype)


def hutchinson_diagonal(objective, x: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None):
    """Unbiased Hutchinson estimate of diag(H(x)) per row: the mean over ``samples`` Rademacher probes z of
    z ⊙ (H z). Uses ``samples`` Hessian-vector products; returns (B, N)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise LSR1Error(f"samples must be a positive integer, got {samples!r}")
    est = torch.zeros_like(x)
    for _ in range(samples):
        z = rademacher(x.shape, generator, dtype=x.dtype, device=x.device)
        est = est + z * objective.hvp(x, z)
    return est / samples


class AdaHessian(Solver):
    """AdaHessian per row; direction m̂/((√v̂)^k + ε), operator diag(1/((√v̂)^k + ε)).

    Args:
        lr: step size (default 0.1).
        betas: (β1, β2) for the EMAs of g and D² (default (0.9, 0.999)).
        eps: added to the denominator.
        hessian_power: k in (0, 1] (default 1).
        n_samples: Hutchinson probes per step (default 1); ``samples`` is accepted as an alias.
        seed: seed of the solver's own torch.Generator (reset with the solver, so runs are reproducible).

    StepInfo.evals counts the gradient evaluation plus one per Hessian-vector product.
    """

    name = "adahessian"

    def __init__(self, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 hessian_power: float = 1.0, n_samples: int = 1, seed: int = 0, samples: int | None = None):
        if samples is not None:
            n_samples = samples
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise LSR1Error(f"lr must be a positive finite number, got {lr!r}")
        if len(betas) != 2 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise LSR1Error(f"betas must be two numbers in [0, 1), got {betas}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise LSR1Error(f"eps must be a positive number, got {eps!r}")
        if not (isinstance(hessian_power, (int, float)) and 0 < hessian_power <= 1):
            raise LSR1Error(f"hessian_power must lie in (0, 1], got {hessian_power!r}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise LSR1Error(f"n_samples (Hutchinson probes per step) must be a positive integer, got {n_samples!r}")
        self.lr, self.betas, self.eps, self.k = float(lr), tuple(betas), float(eps), float(hessian_power)
        self.n_samples, self.seed = n_samples, int(seed)

    @property
    def samples(self) -> int:
        return self.n_samples

    def _init(self, objective):
        self.generator = torch.Generator().manual_seed(self.seed)
        self.state["m"] = torch.zeros_like(self.state["x"])
        self.state["v"] = torch.zeros_like(self.state["x"])

    def _step(self, objective):
        st, (b1, b2) = self.state, self.betas
        x, g = st["x"], st["g"]
        D = hutchinson_diagonal(objective, x, self.n_samples, self.generator).abs()
        t = st["k"] + 1
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * D * D
        mhat = st["m"] / (1 - b1 ** t)
        vhat = st["v"] / (1 - b2 ** t)
        precond = 1.0 / (vhat.sqrt() ** self.k + self.eps)
        d = mhat * precond
        a = torch.full((g.shape[0], 1), self.lr, dtype=g.dtype, device=g.device)
        self._apply(objective, a, d)
        return StepInfo(direction=d, step_size=a, operator=Diagonal(precond), extras={"hess_diag": D},
                        evals=1 + self.n_samples)
