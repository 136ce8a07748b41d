"""Cost of the scale-free (qn) L-SR1 form against the paper form: ``python -m experiments.bench_qn``.

Measures, on one torch thread, (1) the time of one meta-iteration of each paper preset and its qn
counterpart (same N, batch, K and L; also with both in float64, since the qn presets train in float64),
and (2) the time of one inference step at N = 10⁴ on Rosenbrock (batch 1; the qn form's probe and
safeguard evaluations included). Writes docs/benchmarks_qn.md. Issue 13's targets: ≤ 1.5× each.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.meta import Trainer, preset
from lsr1_core.objectives import Rosenbrock

from ._report import command, machine, write_report


def meta_seconds(name: str, iterations: int, **overrides) -> float:
    cfg = preset(name, iterations=iterations, val_every=10**9, ckpt_every=10**9, **overrides)
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, d)
        tr.train_step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(iterations):
            tr.train_step()
        return (time.perf_counter() - t0) / iterations


def step_seconds(form: str, n: int = 10_000, steps: int = 10, dtype=torch.float32) -> tuple[float, float]:
    """Seconds and objective evaluations per step, timing ``Solver.step`` itself (``run`` stops computing
    rows that diverged, which would flatter a diverging method)."""
    cfg = LSR1Config.qn() if form == "qn" else LSR1Config()
    net = LSR1Net(cfg).to(dtype)
    obj = Rosenbrock(n)
    x0 = (0.9 + 0.1 * torch.rand(1, n, generator=torch.Generator().manual_seed(0))).to(dtype)
    solver = LSR1Solver(model=net)
    with torch.no_grad():
        solver.reset(obj, x0)
        solver.step(obj)  # warm-up
        t0, evals = time.perf_counter(), 0
        for _ in range(steps):
            evals += solver.step(obj).evals
    return (time.perf_counter() - t0) / steps, evals / steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("bench_qn"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--out", default="docs/benchmarks_qn.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for paper in ("quadratic", "profile_quadratic", "profile_rosenbrock"):
        its = a.iterations if paper == "quadratic" else max(2, a.iterations // 2)
        t_paper = meta_seconds(paper, its)
        t_paper64 = meta_seconds(paper, its, dtype="float64")
        t_qn = meta_seconds("qn_" + paper, its)
        rows.append((paper, t_paper, t_paper64, t_qn))
    sp, ep = step_seconds("paper")
    sq, eq = step_seconds("qn")
    lines = ["# Cost of the scale-free L-SR1 form", "", f"Command: `{command('bench_qn')}`. Machine: {machine()}.",
             "", "## One meta-iteration (seconds)", "",
             "| preset | paper form (float32, as shipped) | paper form in float64 | qn form (float64, as shipped) | qn / paper (float64) |",
             "|---|---:|---:|---:|---:|"]
    for name, t32, t64, tq in rows:
        lines.append(f"| {name} | {t32:.2f} | {t64:.2f} | {tq:.2f} | {tq / t64:.2f}× |")
    lines += ["", "## One inference step at N = 10⁴ (Rosenbrock near its minimum, batch 1, float32)", "",
              "| form | ms per step | objective evaluations per step |", "|---|---:|---:|",
              f"| paper | {1000 * sp:.1f} | {ep:.2f} |", f"| qn | {1000 * sq:.1f} | {eq:.2f} |",
              "", f"Ratio qn / paper: {sq / sp:.2f}×. Target (issue 13): ≤ 1.5× for both.", ""]
    write_report(Path(a.out).parent, "benchmarks_qn", None, "\n".join(lines), md_name=Path(a.out).name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
