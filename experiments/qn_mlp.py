"""A pretrained L-SR1 on a small ReLU network (the README's "on your own model" use), in no training suite.

    python -m experiments.qn_mlp [--seeds 4] [--steps 100] [--out docs]

Regression of y = sin(Xa) + 0.1·X₁² (256 points, 8 inputs) with a 8-32-32-1 ReLU MLP, full batch, from the
same initial weights per seed: ``LSR1Optimizer`` with ``pretrained/qn_quadratic`` (the scale-free form, BFGS
fallback), the same without the fallback (pairs SR1 cannot use are skipped), ``torch.optim.LBFGS`` (one
iteration per step, strong Wolfe, history 8) and Adam (lr 1e-2, 1e-3). ReLU makes the loss piecewise quadratic:
its gradient jumps where a unit switches, so most SR1 pairs are unusable, which is what the fallback is for.
The loss is also multiplied by 10⁴ for the default row (the form is scale-free; the others would need retuning).
Writes docs/results/qn_mlp.json and docs/results_qn_mlp.md.
"""
from __future__ import annotations

import argparse
import math

import torch

from lsr1_core.checkpoints import PRETRAINED_DIR
from lsr1_core.learned import LSR1Optimizer
from lsr1_core.learned.io import load_model

from ._report import command, write_report


def problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(256, 8, generator=g)
    y = torch.sin(X @ torch.randn(8, 1, generator=g)) + 0.1 * X[:, :1] ** 2
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 1))
    return model, X, y


def fit(method: str, seed: int, steps: int, scale: float = 1.0) -> dict:
    model, X, y = problem(seed)

    def loss_fn():
        return scale * ((model(X) - y) ** 2).mean()

    if method.startswith("lsr1"):
        net, _ = load_model(PRETRAINED_DIR / "qn_quadratic")
        if method == "lsr1_skip":
            net = net.with_config(fallback="skip")
        opt = LSR1Optimizer(model.parameters(), model=net)
    elif method == "lbfgs":
        opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=1, history_size=8, line_search_fn="strong_wolfe")
    elif method.startswith("adam"):
        opt = torch.optim.Adam(model.parameters(), lr=float(method.split("_")[1]))
    else:
        raise ValueError(f"unknown method {method!r}")
    evals = 0

    def closure():
        nonlocal evals
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        evals += 1
        return loss

    for _ in range(steps):
        opt.step(closure)
    with torch.no_grad():
        final = float(loss_fn()) / scale
    return {"loss": final, "evals": evals}


METHODS = {"lsr1": "L-SR1 qn (`qn_quadratic`, BFGS fallback)", "lsr1_skip": "L-SR1 qn, no BFGS fallback",
           "lbfgs": "torch L-BFGS (history 8, strong Wolfe)", "adam_0.01": "Adam, lr 1e-2", "adam_0.001": "Adam, lr 1e-3"}


def evaluate(seeds: int = 4, steps: int = 100) -> dict:
    torch.set_num_threads(1)
    rows = {m: [fit(m, s, steps) for s in range(seeds)] for m in METHODS}
    rows["lsr1_x1e4"] = [fit("lsr1", s, steps, scale=1e4) for s in range(seeds)]
    return {"seeds": seeds, "steps": steps, "rows": rows}


def markdown(res: dict, cmd: str) -> str:
    labels = dict(METHODS, lsr1_x1e4="L-SR1 qn, loss × 10⁴ (reported ÷ 10⁴)")
    lines = ["# A pretrained L-SR1 on a small ReLU network", "", f"Command: `{cmd}`. " + (__doc__ or "").split("\n\n")[2].replace("\n", " "), "",
             f"Final training loss after {res['steps']} optimizer steps, per seed, and the mean of log10; evaluations are closure calls.", "",
             "| method | " + " | ".join(f"seed {s}" for s in range(res["seeds"])) + " | mean log10 loss | evaluations (mean) |",
             "|---|" + "---:|" * (res["seeds"] + 2)]
    for m, runs in res["rows"].items():
        mean_log = sum(math.log10(max(r["loss"], 1e-300)) for r in runs) / len(runs)
        lines.append(f"| {labels[m]} | " + " | ".join(f"{r['loss']:.4f}" for r in runs)
                     + f" | {mean_log:.2f} | {sum(r['evals'] for r in runs) / len(runs):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("qn_mlp"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    if a.seeds < 1 or a.steps < 1:
        ap.error("--seeds and --steps must be at least 1")
    res = evaluate(a.seeds, a.steps)
    write_report(a.out, "qn_mlp", res, markdown(res, command("qn_mlp", f"--seeds {a.seeds} --steps {a.steps}")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
