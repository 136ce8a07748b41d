"""One trace format for every solver."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from .operators import CurvatureOperator


@dataclass
class Trace:
    """What a run recorded.

    Shapes, with T steps, B problems and N coordinates:
      x (T+1, B, N), f (T+1, B), g (T+1, B, N)  — iterates, values, gradients (index 0 = start)
      d (T, B, N)      — direction of step k+1: x_{k+1} = x_k − alpha_k ⊙ d_k
      alpha (T, B, N)  — element-wise step sizes (broadcast for scalar step sizes)
      operators        — per step the curvature operator (inverse-Hessian approximation) that
                         produced d, or None for solvers without one
      extras           — solver-specific per-step tensors (e.g. L-SR1's v_k, secant residual)
      evals (T,)       — objective evaluations used by each step (line searches use several)
      diverged_at (B,) — the first step whose iterate, value or gradient was not finite, −1 if never;
                         from there on the row is frozen at its last finite point
      reason           — for each row, why it diverged (None if it did not)
      row_evals (T, B) — evaluations each row paid in each step (0 once it has stopped or diverged)
      stopped_at (B,)  — the step after which the row met a tolerance (``gtol``/``ftol`` of ``run``; 0: at the
                         start), −1 if never; from there on it is frozen and costs nothing
      stop_reason      — for each row, which tolerance it met and the values (None if it did not)
    When ``record_vectors`` was False, x/g/d/alpha hold only the start and the final step.
    """

    solver: str
    objective: str
    x: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    d: torch.Tensor
    alpha: torch.Tensor
    operators: list[CurvatureOperator | None]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    evals: torch.Tensor | None = None
    diverged_at: torch.Tensor | None = None
    reason: list[str | None] = field(default_factory=list)
    wall_time_s: float = 0.0
    row_evals: torch.Tensor | None = None
    stopped_at: torch.Tensor | None = None
    stop_reason: list[str | None] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.f.shape[0] - 1

    @property
    def batch(self) -> int:
        return self.f.shape[1]

    @property
    def diverged(self) -> torch.Tensor:
        return self.diverged_at >= 0

    @property
    def converged(self) -> torch.Tensor:
        """(B,) bool: rows that met a tolerance of the run."""
        if self.stopped_at is None:
            return torch.zeros_like(self.diverged)
        return self.stopped_at >= 0

    def total_evals(self) -> torch.Tensor:
        """(B,) evaluations each row paid over the run (the per-step count where rows were not tracked)."""
        if self.row_evals is not None and self.row_evals.shape[0] == self.steps:
            return self.row_evals.sum(0)
        return self.evals.sum().expand(self.batch).clone()

    def final_x(self) -> torch.Tensor:
        return self.x[-1]

    def final_f(self) -> torch.Tensor:
        return self.f[-1]

    def to_records(self, row: int = 0) -> list[dict]:
        """Per-step rows for one problem (CSV/JSON export)."""
        out = []
        for k in range(self.steps + 1):
            rec = {"solver": self.solver, "objective": self.objective, "step": k, "f": float(self.f[k, row])}
            if self.x.shape[0] == self.steps + 1:
                for i, v in enumerate(self.x[k, row].tolist()):
                    rec[f"x{i}"] = v
            rec["diverged"] = bool(0 <= int(self.diverged_at[row]) <= k)
            out.append(rec)
        return out

    def to_json(self, row: int = 0) -> str:
        return json.dumps({"solver": self.solver, "objective": self.objective,
                           "diverged_at": int(self.diverged_at[row]), "reason": self.reason[row],
                           "steps": self.to_records(row)})
