"""The Benchmarks page's comparison bench: live performance profiles with the checkpoints the user chose (shipped
ones and runs/), and the reason for every failure.

``live_profiles`` runs every chosen entry on every problem of a subset of the paper's suite (C.2.2) and scores it
with the paper's measure; it builds its solvers as the report ``python -m experiments.profiles`` does (the fixed
Figure 3c run; both from ``analysis.profile_solvers``), but an L-SR1 entry is any checkpoint, and each failure
keeps its reason ("diverged at step 4: objective value became non-finite", "no stable learning rate in the grid",
the exception's message) instead of only an infinite measure.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..analysis import performance_measure, performance_profile, profile_auc
from ..errors import LSR1Error
from ..learned import LSR1Solver
from ..objectives import profile_suite
from ..solvers import run
from ..solvers.tuning import tune_lr
from ..analysis.profile_solvers import FIXED, TUNED, build
from ..device import single_thread


@dataclass(frozen=True)
class BenchEntry:
    """One column of the bench: a classical solver by name, or an L-SR1 checkpoint (path without suffix)."""

    label: str
    solver: str                      # "gd", "adam", "lbfgs", ... or "lsr1"
    checkpoint: str | None = None    # L-SR1 only
    step_scale: float = 1.0          # L-SR1 only

    def build(self, lr: float | None, memory: int, family: str):
        if self.solver == "lsr1":
            kw = {} if self.step_scale == 1.0 else {"step_scale": float(self.step_scale)}
            try:
                s = LSR1Solver(checkpoint=self.checkpoint, memory=memory, **kw)
            except TypeError:
                raise LSR1Error("this version of L-SR1 has no step scale; set it back to 1") from None
            s.net.double()
            return s
        return build(self.solver, lr, memory, family)


CLASSICAL_LABELS = {"gd": "Gradient descent", "adam": "Adam", "adahessian": "AdaHessian", "lodo": "LODO",
                    "lbfgs": "L-BFGS", "sr1": "SR1 (classical)"}


def classical_entries(names=None) -> list[BenchEntry]:
    names = names or list(TUNED) + list(FIXED)
    return [BenchEntry(CLASSICAL_LABELS.get(n, n), n) for n in names]


def failure_reason(tr) -> str | None:
    """Why a run counts as failed (None if it did not): the step and the solver's own reason."""
    div = int(tr.diverged_at[0]) if tr.diverged_at.numel() else -1
    if div >= 0 or bool(tr.diverged.any()):
        why = tr.reason[0] if tr.reason and tr.reason[0] else None
        return why or (f"diverged at step {div} (non-finite values)" if div >= 0 else "diverged")
    x = tr.x[-1, 0].double().numpy()
    if not np.all(np.isfinite(x)):
        return "final iterate not finite"
    return None


def live_profiles(entries: list[BenchEntry], steps: int = 50, families=("quad_cond100",), dims=(50,),
                  memory: int = 8, progress: Callable[[float, str], None] | None = None) -> dict:
    """Performance profiles of ``entries`` on the chosen problems. Returns the dict the profile figure takes
    (``taus``, ``profile``, ``auc``, ``table``: problem → label → measure) plus ``failures``: label → problem →
    reason, ``tuned_lr`` and ``seconds`` per label."""
    if len(entries) < 2:
        raise LSR1Error("choose at least two solvers or models to compare")
    if len({e.label for e in entries}) != len(entries):
        raise LSR1Error("two entries share a label")
    for e in entries:
        if e.solver == "lsr1" and not Path(str(e.checkpoint) + ".json").exists():
            raise LSR1Error(f"{e.label}: checkpoint {e.checkpoint} not found")
    problems = profile_suite(dims=tuple(dims), families=tuple(families))
    if not problems:
        raise LSR1Error("no problem matches the chosen families and dimensions")
    tuned_entries = [e for e in entries if e.solver in TUNED]
    total = len(families) * len(tuned_entries) + len(problems) * len(entries)
    done = 0

    def tick(msg):
        nonlocal done
        done += 1
        if progress:
            progress(done / max(total, 1), msg)

    tuned: dict[str, dict[str, float | None]] = {}
    failures: dict[str, dict[str, str]] = {e.label: {} for e in entries}
    seconds = {e.label: 0.0 for e in entries}
    table = {}
    with single_thread():
        for fam in families:
            small = min((p for p in problems if p.family == fam), key=lambda p: p.dim)
            for e in tuned_entries:
                lr, _ = tune_lr(e.solver, [(small.objective, small.x0)], steps=steps)
                tuned.setdefault(fam, {})[e.label] = lr
                tick(f"tuned {e.label} on {fam}: lr = {lr}")
        for p in problems:
            xs = p.x_star()
            fx = {}
            for e in entries:
                lr = tuned.get(p.family, {}).get(e.label)
                t0 = time.perf_counter()
                try:
                    if e.solver in TUNED and lr is None:
                        raise LSR1Error("no stable learning rate in the grid (every rate diverged while tuning)")
                    tr = run(e.build(lr, memory, p.family), p.objective, p.x0, steps, record_vectors=False,
                             keep_operators=False)
                    why = failure_reason(tr)
                    fx[e.label] = None if why else tr.x[-1, 0].double().numpy()
                    if why:
                        failures[e.label][p.name] = why
                except (LSR1Error, RuntimeError, ValueError) as err:
                    fx[e.label] = None
                    failures[e.label][p.name] = f"error: {err}"
                seconds[e.label] += time.perf_counter() - t0
                tick(f"{e.label} on {p.name}")
            if xs is None:
                continue
            table[p.name] = performance_measure(fx, xs[0].double().numpy())
    if not table:
        raise LSR1Error("none of the chosen problems has a known minimiser to score against")
    taus, prof = performance_profile(table)
    return {"steps": steps, "families": list(families), "dims": list(dims), "memory": memory, "tuned_lr": tuned,
            "table": table, "failures": failures, "seconds": seconds, "taus": taus.tolist(),
            "profile": {s: v.tolist() for s, v in prof.items()},
            "auc": {s: profile_auc(taus, np.array(v)) for s, v in prof.items()}}


def failure_rows(result: dict) -> list[dict]:
    """One row per failed (entry, problem) with its reason, for a table on the page."""
    return [{"solver / model": lab, "problem": prob, "reason": why}
            for lab, fails in result.get("failures", {}).items() for prob, why in fails.items()]


def measure_rows(result: dict) -> list[dict]:
    """problem → each entry's measure, failures written 'failed' rather than 'inf'."""
    out = []
    for prob, row in result["table"].items():
        out.append({"problem": prob, **{lab: ("failed" if not math.isfinite(v) else f"{v:.3g}")
                                        for lab, v in row.items()}})
    return out
