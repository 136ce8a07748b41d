"""Benchmarks: ``python -m experiments.bench`` writes docs/benchmarks.md.

Measures
  1. meta-training throughput of the C.2.1 quadratic preset (batch 128, N = 2, K = 16, L = 8);
  2. time and peak memory of one inference step of L-SR1, Adam and L-BFGS at N = 10², 10⁴, 10⁶;
  3. the FLOP rate of the L-SR1 step against a plain matrix multiply of the same shape.
Each inference measurement runs in a fresh subprocess so that its peak resident memory is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.meta import Trainer, preset
from lsr1_core.objectives import Rosenbrock
from lsr1_core.solvers import make_solver

from . import _report
from ._report import command, machine

ROOT = Path(__file__).resolve().parents[1]  # the repository: the measuring subprocess imports experiments from it


def meta_throughput(iterations: int = 40, warmup: int = 5, compile: bool = False) -> dict:
    cfg = preset("quadratic", iterations=iterations, val_every=10**9, ckpt_every=10**9, compile=compile)
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, d)
        for _ in range(warmup):
            tr.train_step()
        t0 = time.perf_counter()
        for _ in range(iterations):
            tr.train_step()
        dt = time.perf_counter() - t0
    rate = iterations / dt
    return {"it_per_s": rate, "minutes_for_10k": 10_000 / rate / 60}


def _mlp_flops_per_row(net) -> int:
    return sum(2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear))


def step_measure(solver: str, n: int, steps: int = 3) -> dict:
    """Run in a subprocess: time and peak RSS increase of one solver step at dimension n."""
    torch.manual_seed(0)
    obj = Rosenbrock(n)
    x0 = torch.rand(1, n) * 2 - 1
    if solver == "lsr1":
        net = LSR1Net(LSR1Config())
        s = LSR1Solver(model=net)
    elif solver == "lbfgs":
        s = make_solver("lbfgs", memory=8, lr=1e-3)
    else:
        s = make_solver(solver, lr=1e-3)
    with torch.no_grad():
        s.reset(obj, x0)
    # ru_maxrss is the process's lifetime peak: the increase over the state after set-up is the most
    # memory any step needed on top of the problem itself (the first step included).
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        s.step(obj)  # warm-up (buffers, allocator)
    times = []
    with torch.no_grad():
        for _ in range(steps):
            t0 = time.perf_counter()
            s.step(obj)
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"solver": solver, "n": n, "ms": 1000 * min(times), "peak_rss_increase_mb": (peak - base) / 1024,
           "peak_rss_mb": peak / 1024}
    if solver == "lsr1":
        flops = _mlp_flops_per_row(net) * n
        out["gflops"] = flops / min(times) / 1e9
        H = net.config.hidden
        a = torch.randn(n, H)
        w = torch.randn(H, H)
        torch.mm(a, w)
        reps = max(1, int(2e9 // (2 * n * H * H)))
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, w)
        mm_rate = 2 * n * H * H * reps / (time.perf_counter() - t0) / 1e9
        out["matmul_gflops"] = mm_rate
        out["fraction_of_matmul"] = out["gflops"] / mm_rate
    return out


def _subprocess_measure(solver: str, n: int) -> dict:
    code = f"import json; from experiments.bench import step_measure; print(json.dumps(step_measure({solver!r}, {n})))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if res.returncode != 0:
        return {"solver": solver, "n": n, "error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_report(path: Path, meta: dict, steps: list[dict], extra_sections: list[str] | None = None) -> None:
    lines = ["# Benchmarks", "", f"Machine: {machine()}", "",
             f"Command: `{command('bench')}` (run on {time.strftime('%Y-%m-%d')}).", "",
             "## Meta-training throughput (C.2.1 quadratic preset: batch 128, N = 2, K = 16, L = 8, hidden 128)", "",
             f"- {meta['it_per_s']:.2f} meta-iterations per second; the paper's 10 000 iterations would take "
             f"{meta['minutes_for_10k']:.1f} minutes (target: ≥ 10 it/s, < 17 minutes; the paper: ≈ 15 h on an RTX 3090).",
             f"- with `--compile` (torch.compile of the element-wise MLPs, after a one-off compile of ≈20 s): "
             f"{meta.get('compiled_it_per_s', float('nan')):.2f} it/s, {meta.get('compiled_minutes_for_10k', float('nan')):.1f} minutes for 10 000.",
             "", "## One inference step on Rosenbrock (batch 1)", "",
             "| solver | N | time per step (ms) | peak memory of a step (MB, RSS above set-up) | GFLOP/s | fraction of matmul |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in steps:
        if "error" in r:
            lines.append(f"| {r['solver']} | {r['n']:,} | error: {r['error']} | | | |")
            continue
        gf = f"{r['gflops']:.1f}" if "gflops" in r else ""
        fr = f"{r['fraction_of_matmul']:.0%} (matmul {r['matmul_gflops']:.1f} GFLOP/s)" if "fraction_of_matmul" in r else ""
        lines.append(f"| {r['solver']} | {r['n']:,} | {r['ms']:.2f} | {r['peak_rss_increase_mb']:.1f} | {gf} | {fr} |")
    lines += ["", "FLOPs count the Linear layers of the three element-wise MLPs (2·in·out per coordinate); the "
              "matmul reference is `torch.mm` of an (N, hidden) by (hidden, hidden) matrix on the same machine. "
              "Peak memory is the growth of the process's peak resident set (ru_maxrss) during the steps over its "
              "peak after importing torch and setting up the problem, so a step that needs less than that "
              "baseline (≈ 0.5 GB) reads 0.", ""]
    for sec in extra_sections or []:
        lines += [sec, ""]
    lines += ["## Explorer app", "", "The app's timings (Trajectories page with six solvers and 200 steps; the step "
              "slider), through Streamlit's AppTest and in headless Chromium, are in "
              "[benchmarks_app.md](benchmarks_app.md), written by `python -m tools.bench_app`.", ""]
    _report.write_report(path.parent, "benchmarks", None, "\n".join(lines), md_name=path.name, echo=False)


MAX_DIM = 100_000_000


def _parse_dims(text: str) -> list[int] | None:
    """``"100,10000"`` → [100, 10000]; None when any item is not a positive integer ≤ MAX_DIM (or none given)."""
    dims = []
    for item in str(text).split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()) or len(item) > 9 or not 1 <= int(item) <= MAX_DIM:
            return None
        dims.append(int(item))
    return dims or None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("bench"))
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--dims", default="100,10000,1000000")
    ap.add_argument("--quick", action="store_true", help="fewer iterations, smaller dims (smoke test)")
    args = ap.parse_args(argv)
    dims = _parse_dims(args.dims)
    out = Path(args.out)
    if dims is None or out.is_dir() or not out.name:
        problem = (f"--dims must be a comma-separated list of positive integers up to {MAX_DIM:,}, got {args.dims!r}"
                   if dims is None else f"--out {args.out} is a directory; give the report's file name")
        print(f"error: {problem}", file=sys.stderr)  # before anything is measured (results are never lost)
        return 2
    if args.quick:
        dims = [100, 10_000]
    meta = meta_throughput(iterations=10 if args.quick else 40)
    meta_c = meta_throughput(iterations=10 if args.quick else 40, compile=True)
    meta["compiled_it_per_s"] = meta_c["it_per_s"]
    meta["compiled_minutes_for_10k"] = meta_c["minutes_for_10k"]
    print(json.dumps(meta))
    steps = []
    for n in dims:
        for s in ("lsr1", "adam", "lbfgs"):
            r = _subprocess_measure(s, n)
            print(json.dumps(r))
            steps.append(r)
    write_report(Path(args.out), meta, steps)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
