"""Wall time per evaluation of ``LSR1Optimizer`` beside ``torch.optim.LBFGS`` (issue 23's cost target).

    python -m experiments.optimizer_cost [--sizes 1000 100000 1000000] [--steps 30] [--out docs]

A ridge regression with N parameters (64 samples, float32, one torch thread), 30 ``step`` calls each: the qn form
from ``pretrained/qn_quadratic`` (the README's "on your own model" use; its output layers are zero, so its networks
are skipped), the paper form from ``pretrained/quadratic`` (step_scale 0.05; up to N = 10⁵: its per-coordinate
networks need N × 128 activations), and torch.optim.LBFGS (one iteration per step, history 8, strong Wolfe).
Tolerances are off for all, so each makes all its steps. Reported: milliseconds per closure call (all of it, and
the optimizer's own share: total minus the time inside the closure), calls, final loss. Writes
docs/benchmarks_optimizer.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from lsr1_core.checkpoints import PRETRAINED_DIR
from lsr1_core.errors import NonFiniteError
from lsr1_core.learned import LSR1Optimizer

from ._report import command, machine, out_dir, write_report


def measure(n: int, method: str, steps: int = 30, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(64, n, generator=g) / n ** 0.5
    b = torch.randn(64, generator=g)
    w = torch.nn.Parameter(torch.zeros(n))
    if method == "qn":
        opt = LSR1Optimizer([w], checkpoint=PRETRAINED_DIR / "qn_quadratic", tolerance_grad=None,
                            tolerance_change=None)
    elif method == "paper":
        opt = LSR1Optimizer([w], checkpoint=PRETRAINED_DIR / "quadratic", step_scale=0.05, tolerance_grad=None,
                            tolerance_change=None)
    else:
        opt = torch.optim.LBFGS([w], lr=1, max_iter=1, history_size=8, line_search_fn="strong_wolfe",
                                tolerance_grad=0, tolerance_change=0)
    calls, inside = 0, 0.0

    def closure():
        nonlocal calls, inside
        t = time.perf_counter()
        opt.zero_grad()
        loss = ((A @ w - b) ** 2).mean() + 1e-3 * (w * w).sum()
        loss.backward()
        calls += 1
        inside += time.perf_counter() - t
        return loss

    t0 = time.perf_counter()
    note = ""
    try:
        for _ in range(steps):
            opt.step(closure)
    except NonFiniteError:  # the paper form's unguarded step can leave the finite range: what it cost until then
        note = "diverged (non-finite step; stopped)"
    total = time.perf_counter() - t0
    with torch.no_grad():
        final = float(((A @ w - b) ** 2).mean() + 1e-3 * (w * w).sum())
    return {"ms_per_eval": 1e3 * total / calls, "own_ms_per_eval": 1e3 * (total - inside) / calls, "calls": calls,
            "loss": final, "total_s": total, "note": note}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("optimizer_cost"), description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    if any(n < 1 for n in a.sizes) or a.steps < 1:
        ap.error("--sizes and --steps must be positive integers")
    out = out_dir(ap, a.out)
    torch.set_num_threads(1)
    rows = []
    for n in a.sizes:
        for m in ("qn", "lbfgs") + (("paper",) if n <= 100_000 else ()):
            r = measure(n, m, a.steps)
            rows.append((n, m, r))
            print(n, m, r, file=sys.stderr)
    names = {"qn": "LSR1Optimizer, qn form (`qn_quadratic`)", "paper": "LSR1Optimizer, paper form (`quadratic`)",
             "lbfgs": "torch.optim.LBFGS (strong Wolfe)"}
    lines = ["# LSR1Optimizer: wall time per evaluation", "",
             f"Command: `{command('optimizer_cost', *(argv or sys.argv[1:]))}`. "
             f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "Ridge regression (64 samples, float32, one thread), the same 30 `step` calls for each, tolerances off. "
             "*Own* is the optimizer's share (total minus the time inside the closure). Target (issue 23): the qn "
             "form ≤ 1.5× torch.optim.LBFGS per evaluation.", "",
             "| N | optimizer | ms per evaluation | own ms per evaluation | evaluations | total s (30 steps) | final loss | "
             "÷ LBFGS per evaluation |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    ref = {n: r for n, m, r in rows if m == "lbfgs"}
    for n, m, r in rows:
        ratio = f"{r['ms_per_eval'] / ref[n]['ms_per_eval']:.1f}×" if m != "lbfgs" else ""
        lines.append(f"| {n:,} | {names[m]} | {r['ms_per_eval']:.3f} | {r['own_ms_per_eval']:.3f} | {r['calls']} | "
                     f"{r['total_s']:.3f} | "
                     f"{r['loss']:.6g}{' — ' + r['note'] if r['note'] else ''} | {ratio} |")
    lines += ["", "The qn form's own cost is the O(L²N) rebuild of its vectors whenever γ changes (most steps), the BFGS "
              "fallback's two-loop products and the two-scale H₀'s QR, against L-BFGS's O(LN) two-loop recursion; its "
              "per-coordinate networks are skipped for this checkpoint (zero output layers). It needs about half the "
              "evaluations of torch's strong-Wolfe LBFGS here (the same final loss), which narrows but does not close "
              "the gap in total time. The paper form's per-coordinate networks run on every coordinate at every step."]
    write_report(out, "optimizer_cost", None, "\n".join(lines) + "\n", md_name="benchmarks_optimizer.md", echo=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
