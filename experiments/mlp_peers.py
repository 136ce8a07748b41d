"""The optimizer a user gets without a card, on models in none of the project's suites: small neural networks.

    python -m experiments.mlp_peers [--seeds 20] [--budget 300] [--out docs]

Small tanh MLPs (5 inputs, 16 hidden units, 1 output; 200 samples, float32, full batch), built from a seed:
*regression* of y = sin(xᵀw) + 0.1·noise (mean squared error; non-convex, not driven to zero in the budget) and
*classification* of y = [x₁·x₂ > 0] (logistic loss; separable, so the loss falls towards 0). Optimizers, each at
most ``--budget`` closure calls, every call counted:

  * ``LSR1Optimizer(model.parameters())`` — the default without a card (the untrained ``LSR1Config.qn_bfgs()``),
  * the same with 8 pairs (``LSR1Config.qn_bfgs(memory=8)``; ablation of its memory),
  * torch.optim.LBFGS (strong Wolfe, history 10, one ``step`` call with max_iter = max_eval = budget: how it is
    meant to be called; called one iteration per ``step`` it re-evaluates a point at every call),
  * torch.optim.Adam (lr 1e-2, one evaluation per step), for scale.

Both quasi-Newton optimizers get max|∇| ≤ 1e-9 as their gradient tolerance and no tolerance on the change of f.
Reported per problem kind: evaluations to reach a loss threshold (classification: 1e-3 and 1e-6) as a geometric
mean ratio to torch.optim.LBFGS over the seeds both reach it, and the best loss within the budget (log₁₀ ratio to
LBFGS's, median, and on how many seeds the optimizer ends lower). Writes ``<out>/results/mlp_peers.json`` and
``<out>/results_mlp_peers.md``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Optimizer

from ._report import command, machine, out_dir, write_report

KINDS = {"regression": (), "classification": (1e-3, 1e-6)}
OPTIMIZERS = {
    "default": "LSR1Optimizer(params) — no card: untrained qn_bfgs, 10 pairs",
    "default_m8": "the same with 8 pairs (ablation)",
    "torch_lbfgs": "torch.optim.LBFGS (strong Wolfe, history 10, one step call)",
    "adam": "torch.optim.Adam (lr 1e-2)",
}


def problem(seed: int, kind: str):
    """(model, X, loss function) of one seeded problem; the model's initial weights come from the seed too."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(200, 5, generator=g)
    if kind == "regression":
        y = torch.sin(X @ torch.randn(5, 1, generator=g)) + 0.1 * torch.randn(200, 1, generator=g)

        def loss(out):
            return ((out - y) ** 2).mean()
    else:
        y = (X[:, :1] * X[:, 1:2] > 0).float()

        def loss(out):
            return torch.nn.functional.binary_cross_entropy_with_logits(out, y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model, X, loss


def fit(name: str, seed: int, kind: str, budget: int) -> list[float]:
    """The loss at every closure call of one run (at most ``budget`` calls)."""
    model, X, lossf = problem(seed, kind)
    params = list(model.parameters())
    if name == "default":
        opt = LSR1Optimizer(params, tolerance_grad=1e-9, tolerance_change=None)
    elif name == "default_m8":
        opt = LSR1Optimizer(params, model=LSR1Net(LSR1Config.qn_bfgs(memory=8)), tolerance_grad=1e-9,
                            tolerance_change=None)
    elif name == "torch_lbfgs":
        opt = torch.optim.LBFGS(params, lr=1, max_iter=budget, max_eval=budget, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=0)
    elif name == "adam":
        opt = torch.optim.Adam(params, lr=1e-2)
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    losses: list[float] = []

    def closure():
        opt.zero_grad()
        loss = lossf(model(X))
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    while len(losses) < budget:
        before = len(losses)
        opt.step(closure)
        if name == "torch_lbfgs" or len(losses) == before:  # one call is LBFGS's whole run; a converged L-SR1 stops
            break
    return losses[:budget]


def first_below(losses: list[float], threshold: float) -> int | None:
    """The number of closure calls until the loss first was ≤ threshold (None: never)."""
    return next((i + 1 for i, v in enumerate(losses) if v <= threshold), None)


def geo_mean(xs: list[float]) -> float | None:
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else None


def analyse(runs: dict, seeds: int) -> dict:
    """Per kind and optimizer: the ratios to torch.optim.LBFGS (see the module docstring)."""
    out = {}
    for kind, thresholds in KINDS.items():
        ref = runs[kind]["torch_lbfgs"]
        res = {}
        for name in OPTIMIZERS:
            mine = runs[kind][name]
            row = {"best": [min(h) for h in mine]}
            logs = [math.log10(max(min(a), 1e-30) / max(min(b), 1e-30)) for a, b in zip(mine, ref)]
            row["best_log10_ratio_median"] = statistics.median(logs)
            row["lower_than_lbfgs"] = sum(x < 0 for x in logs)
            for thr in thresholds:
                pairs = [(first_below(a, thr), first_below(b, thr)) for a, b in zip(mine, ref)]
                both = [x / y for x, y in pairs if x and y]
                row[f"evals_to_{thr:g}_ratio"] = geo_mean(both)
                row[f"evals_to_{thr:g}_n"] = len(both)
                row[f"evals_to_{thr:g}_reached"] = sum(x is not None for x, _ in pairs)
            res[name] = row
        out[kind] = res
    out["seeds"] = seeds
    return out


def markdown(res: dict, cmd: str, budget: int, wall: float) -> str:
    lines = ["# Small neural networks: the default optimizer against torch.optim.LBFGS", "",
             f"Command: `{cmd}` ({wall / 60:.1f} min on one core). Machine: {machine()}.", "",
             f"Tanh MLPs 5–16–1, 200 samples, float32, full batch, {res['seeds']} seeds per kind, at most {budget} "
             "closure calls (every call counted). Ratios are to torch.optim.LBFGS (strong Wolfe, history 10, one "
             "`step` call); below 1 is fewer evaluations, a negative log ratio a lower loss. Problems and "
             "optimizers: `experiments/mlp_peers.py`.", ""]
    for kind, thresholds in KINDS.items():
        head = "| optimizer | " + " | ".join(f"evaluations to loss ≤ {t:g} ÷ LBFGS (seeds reached)"
                                             for t in thresholds)
        head += (" | " if thresholds else "") + "best loss, median log₁₀ ÷ LBFGS's | seeds ending lower than LBFGS |"
        lines += [f"## {kind}", "", head, "|---" * (len(thresholds) + 3) + "|"]
        for name, label in OPTIMIZERS.items():
            row = res[kind][name]
            cells = []
            for t in thresholds:
                r = row[f"evals_to_{t:g}_ratio"]
                cells.append(f"{r:.3f}× ({row[f'evals_to_{t:g}_reached']}/{res['seeds']})" if r is not None
                             else f"— ({row[f'evals_to_{t:g}_reached']}/{res['seeds']})")
            if name == "torch_lbfgs":
                cells = [f"1 ({row[f'evals_to_{t:g}_reached']}/{res['seeds']})" for t in thresholds]
                lines.append(f"| {label} | " + " | ".join(cells + ["0", "—"]) + " |")
                continue
            lines.append(f"| {label} | " + " | ".join(
                cells + [f"{row['best_log10_ratio_median']:+.3f}", f"{row['lower_than_lbfgs']}/{res['seeds']}"]) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("mlp_peers"), description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    if a.seeds < 1 or a.budget < 2:
        ap.error("--seeds must be at least 1 and --budget at least 2")
    out = out_dir(ap, a.out)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    runs = {kind: {name: [] for name in OPTIMIZERS} for kind in KINDS}
    for kind in KINDS:
        for seed in range(a.seeds):
            for name in OPTIMIZERS:
                runs[kind][name].append(fit(name, seed, kind, a.budget))
            print(f"{kind} seed {seed}: " + ", ".join(f"{n} {min(runs[kind][n][-1]):.3g}" for n in OPTIMIZERS),
                  file=sys.stderr)
    res = analyse(runs, a.seeds)
    cmd = command("mlp_peers", *(sys.argv[1:] if argv is None else argv))
    per_run = {kind: {name: [{"evals": len(h), "best": min(h), **{f"evals_to_{t:g}": first_below(h, t)
                                                                  for t in KINDS[kind]}} for h in hs]
                      for name, hs in by.items()} for kind, by in runs.items()}
    write_report(out, "mlp_peers", {"summary": res, "runs": per_run, "command": cmd}, markdown(
        res, cmd, a.budget, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
