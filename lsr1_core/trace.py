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
      reason           — for each row, why it stopped (None if it did not)
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

    @property
    def steps(self) -> int:
        return self.f.shape[0] - 1

    @property
    def batch(self) -> int:
        return self.f.shape[1]

    @property
    def diverged(self) -> torch.Tensor:
        return self.diverged_at >= 0

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
