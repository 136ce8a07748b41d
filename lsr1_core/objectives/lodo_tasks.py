"""The test tasks of the LODO paper (Liao et al., TMLR 2023), plus a small real training task.

* :class:`NoisyQuadraticBowl`: ½(x − c)ᵀH(x − c) in n = 100 dimensions, eigenvalues of H
  log-spaced from 1e-3 to 1 with random orthogonal eigenvectors, and a centre c that moves by
  ``scale``·N(0, I) every step. It is non-stationary: call :meth:`~NoisyQuadraticBowl.advance`
  between steps, or let :func:`run_nonstationary` do it.
* :class:`LODORosenbrock`: the paper's rescaled Rosenbrock 0.01(1 − x)² + (y − x²)² from (−0.5, 2).
* :class:`DigitsMLP`: a one-hidden-layer MLP on scikit-learn's bundled 8×8 digits, as an
  objective over the flat parameter vector; each :meth:`~DigitsMLP.advance` draws a fresh,
  seeded minibatch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import LSR1Error, ShapeError
from .base import check_dense_hessian, Objective, check_batch, check_finite


class NonStationary(Objective):
    """An objective that changes between steps: ``advance(generator)`` moves it on."""

    def advance(self, generator: torch.Generator) -> None:
        raise NotImplementedError


class NoisyQuadraticBowl(NonStationary):
    """½(x − c_b)ᵀ H (x − c_b) for each of ``batch`` rows; H shared, each row's centre its own walk.

    The gradient at the new point carries the information the paper's "noise" is about: after
    each step the minimum has moved by an unpredictable N(0, scale²I), so even a solver that
    jumps exactly onto the current centre pays on average ``noise_floor() = ½·scale²·tr(H)``.
    """

    convex = True

    def __init__(self, n: int = 100, batch: int = 1, scale: float = 1.0, seed: int = 0,
                 eig_range: tuple[float, float] = (1e-3, 1.0), dtype=torch.float64, device=None):
        if not isinstance(n, int) or n < 1:
            raise LSR1Error(f"n must be a positive integer, got {n!r}")
        if not isinstance(batch, int) or batch < 1:
            raise LSR1Error(f"batch must be a positive integer, got {batch!r}")
        if not (scale >= 0 and math.isfinite(scale)):
            raise LSR1Error(f"scale (the random-walk step) must be a finite number >= 0, got {scale!r}")
        lo, hi = eig_range
        if not (0 < lo <= hi):
            raise LSR1Error(f"eig_range must satisfy 0 < low <= high, got {eig_range!r}")
        gen = torch.Generator().manual_seed(int(seed))
        Q, R = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
        self.eigvals = torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)
        self.eigvecs = Q
        H = (Q * self.eigvals) @ Q.T
        self.H = (0.5 * (H + H.T)).to(dtype=dtype, device=device)
        self.Hinv = ((Q / self.eigvals) @ Q.T).to(dtype=dtype, device=device)
        self.centre = torch.zeros(batch, n, dtype=dtype, device=device)
        self.scale = float(scale)
        self.dim, self.batch = n, batch
        self.name = "noisy_bowl"

    def advance(self, generator: torch.Generator) -> None:
        """The centre takes one random-walk step."""
        noise = torch.randn(self.centre.shape, generator=generator, dtype=torch.float64)
        self.centre = self.centre + self.scale * noise.to(self.centre)

    def value(self, x):
        return self.value_and_grad(x)[0]

    def grad(self, x):
        return self.value_and_grad(x)[1]

    def value_and_grad(self, x):
        r = x - self.centre.to(x)
        Hr = r @ self.H.to(x)
        return 0.5 * (r * Hr).sum(-1), Hr

    def hvp(self, x, v):
        return v @ self.H.to(v)

    def hessian(self, x):

        check_dense_hessian(x)
        return self.H.to(x).expand(x.shape[0], -1, -1).clone()

    def newton_direction(self, x):
        return x - self.centre.to(x)

    def minimizer(self):
        return self.centre.clone()

    def noise_floor(self) -> float:
        """Expected loss of a perfect tracker just after the centre moves: ½·scale²·tr(H)."""
        return 0.5 * self.scale ** 2 * float(self.eigvals.sum())


class LODORosenbrock(Objective):
    """f(x, y) = a(1 − x)² + (y − x²)² with a = 0.01 (the LODO paper's rescaled Rosenbrock).

    Minimum 0 at (1, 1); the paper starts at (−0.5, 2) and runs 200 steps.
    """

    dim = 2
    default_start = (-0.5, 2.0)

    def __init__(self, a: float = 0.01):
        if not (a > 0 and math.isfinite(a)):
            raise LSR1Error(f"a must be a positive finite number, got {a!r}")
        self.a = float(a)
        self.name = "rosenbrock_lodo"

    def value(self, x):
        return self.a * (1 - x[:, 0]) ** 2 + (x[:, 1] - x[:, 0] ** 2) ** 2

    def grad(self, x):
        u, v = x[:, 0], x[:, 1]
        r = v - u * u
        return torch.stack([-2 * self.a * (1 - u) - 4 * u * r, 2 * r], dim=-1)

    def value_and_grad(self, x):
        return self.value(x), self.grad(x)

    def hessian(self, x):

        check_dense_hessian(x)
        u, v = x[:, 0], x[:, 1]
        huu = 2 * self.a - 4 * (v - u * u) + 8 * u * u
        huv = -4 * u
        hvv = torch.full_like(u, 2.0)
        return torch.stack([torch.stack([huu, huv], -1), torch.stack([huv, hvv], -1)], -2)

    def minimizer(self):
        return torch.ones(1, 2, dtype=torch.float64)

    def start(self, batch: int = 1, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor([self.default_start], dtype=dtype).repeat(batch, 1)


class DigitsMLP(NonStationary):
    """Cross-entropy of a 64 → hidden → 10 tanh MLP on scikit-learn's digits, over flat parameters.

    x is (B, P) with P = 64·h + h + h·10 + 10 (W1, b1, W2, b2 row-major); every row is its own
    network, all rows see the same minibatch. :meth:`advance` draws the next minibatch from the
    training split; :meth:`full_loss` and :meth:`accuracy` evaluate on a whole split. The split
    and the first minibatch are fixed by ``seed``. Needs scikit-learn (the data ship with it).
    """

    def __init__(self, hidden: int = 32, batch_size: int = 64, test_fraction: float = 0.25, seed: int = 0,
                 dtype=torch.float64):
        try:
            from sklearn.datasets import load_digits  # optional: only the digits task needs it
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise LSR1Error("DigitsMLP needs scikit-learn (pip install scikit-learn)") from exc
        if not isinstance(hidden, int) or hidden < 1:
            raise LSR1Error(f"hidden must be a positive integer, got {hidden!r}")
        if not (0 < test_fraction < 1):
            raise LSR1Error(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
        data = load_digits()
        X = torch.tensor(data.data, dtype=dtype) / 16.0
        y = torch.tensor(data.target, dtype=torch.long)
        gen = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(X.shape[0], generator=gen)
        n_test = int(round(test_fraction * X.shape[0]))
        test, train = order[:n_test], order[n_test:]
        self.X_train, self.y_train = X[train], y[train]
        self.X_test, self.y_test = X[test], y[test]
        if not isinstance(batch_size, int) or not (1 <= batch_size <= len(train)):
            raise LSR1Error(f"batch_size must be an integer in [1, {len(train)}], got {batch_size!r}")
        self.hidden, self.batch_size = hidden, batch_size
        self.sizes = [(64, hidden), (hidden,), (hidden, 10), (10,)]
        self.dim = sum(math.prod(s) for s in self.sizes)
        self.batch = None
        self.name = "digits_mlp"
        self.advance(gen)

    def advance(self, generator: torch.Generator) -> None:
        """Draw the next minibatch (without replacement within the batch)."""
        self.idx = torch.randperm(self.X_train.shape[0], generator=generator)[: self.batch_size]

    def unflatten(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_batch(x, self.dim)
        out, offset = [], 0
        for s in self.sizes:
            k = math.prod(s)
            out.append(x[:, offset:offset + k].reshape(x.shape[0], *s))
            offset += k
        return out

    def logits(self, x: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        W1, b1, W2, b2 = self.unflatten(x)
        hdn = torch.tanh(torch.einsum("si,bih->bsh", X.to(x), W1) + b1.unsqueeze(1))
        return torch.einsum("bsh,bho->bso", hdn, W2) + b2.unsqueeze(1)

    def _loss(self, x, X, y):
        z = self.logits(x, X)
        B, S, C = z.shape
        ce = torch.nn.functional.cross_entropy(z.reshape(B * S, C), y.repeat(B), reduction="none")
        return ce.reshape(B, S).mean(1)

    def value(self, x):
        return self._loss(x, self.X_train[self.idx], self.y_train[self.idx])

    def full_loss(self, x: torch.Tensor, split: str = "train") -> torch.Tensor:
        X, y = self._split(split)
        with torch.no_grad():
            return self._loss(x, X, y)

    def accuracy(self, x: torch.Tensor, split: str = "test") -> torch.Tensor:
        X, y = self._split(split)
        with torch.no_grad():
            return (self.logits(x, X).argmax(-1) == y).to(x.dtype).mean(1)

    def _split(self, split):
        if split == "train":
            return self.X_train, self.y_train
        if split == "test":
            return self.X_test, self.y_test
        raise LSR1Error(f"split must be 'train' or 'test', got {split!r}")

    def init_params(self, batch: int = 1, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
        """Glorot-style initial parameters (B, P), rows drawn independently from ``seed``."""
        gen = torch.Generator().manual_seed(int(seed))
        parts = []
        for s in self.sizes:
            if len(s) == 2:
                parts.append(torch.randn(batch, *s, generator=gen, dtype=dtype) / math.sqrt(s[0]))
            else:
                parts.append(torch.zeros(batch, *s, dtype=dtype))
        return torch.cat([p.reshape(batch, -1) for p in parts], dim=1)


@dataclass
class NonStationaryRun:
    """What :func:`run_nonstationary` recorded: f[k] is each row's loss at x_k on the objective as
    it was when x_k was evaluated (f[0] at the start), and whatever ``record`` returned."""

    f: torch.Tensor
    records: list = field(default_factory=list)
    wall_time_s: float = 0.0


def run_nonstationary(solver, objective: NonStationary, x0: torch.Tensor, steps: int, generator: torch.Generator,
                      record: Callable | None = None, record_every: int = 1) -> NonStationaryRun:
    """Run ``solver`` for ``steps`` steps on a changing objective: before every step the objective
    advances (the bowl's centre moves, a new minibatch is drawn), then the solver steps and sees
    the loss and gradient at its new point on the moved objective — LODO's setting.

    ``record(k, solver, info)`` is called after step k (1-based) every ``record_every`` steps and at
    the last step; its results are kept in order.
    """
    if not isinstance(steps, int) or steps < 0:
        raise LSR1Error(f"steps must be a non-negative integer, got {steps!r}")
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2:
        raise ShapeError("x0 must be a tensor of shape (B, N)")
    check_finite(x0)
    t0 = time.perf_counter()
    with torch.no_grad():
        solver.reset(objective, x0)
    fs = [solver.state["f"].clone()]
    records = []
    for k in range(1, steps + 1):
        objective.advance(generator)
        with torch.no_grad():
            info = solver.step(objective)
        fs.append(solver.state["f"].clone())
        if record is not None and (k % record_every == 0 or k == steps):
            records.append(record(k, solver, info))
    return NonStationaryRun(f=torch.stack(fs), records=records, wall_time_s=time.perf_counter() - t0)


__all__ = ["NonStationary", "NoisyQuadraticBowl", "LODORosenbrock", "DigitsMLP", "NonStationaryRun",
           "run_nonstationary"]
