"""Dimension generalisation of the shipped quadratic models (beyond the paper).

    python -m experiments.dims [--models quadratic profile_quadratic] [--steps 20]

Each model runs ``steps`` iterations on spectrum-controlled quadratics of growing N (H = Q diag(λ) Qᵀ with
log₁₀ λ uniform on [−3, 0], the same problems as ``experiments.quadratics``' dimension study) with its
training buffer size; tuned gradient descent (grid search per N) is the reference. Reported: the mean relative
gap (f(x_T) − f*) / (f(x_0) − f*), its spread over problems, and how many runs diverged. Writes
docs/results/dims.json and docs/results_dims.md.
"""
from __future__ import annotations

import argparse
import json

import torch

from lsr1_core.learned.io import load_model
from lsr1_core.learned import LSR1Solver
from lsr1_core.objectives.quadratic import spectrum_quadratics
from lsr1_core.pretrained import PRETRAINED_DIR, pretrained_path
from lsr1_core.solvers import run
from ._report import command, write_report
from .quadratics import tuned_gd

DIMS = (2, 10, 100, 1000)


def evaluate(models: list[str], dims=DIMS, steps: int = 20) -> dict:
    out = {"steps": steps, "dims": list(dims), "models": {}, "gd": {}}
    problems = {}
    for n in dims:
        g = torch.Generator().manual_seed(31337 + n)
        problems[n] = spectrum_quadratics(n, 8 if n >= 1000 else 32, generator=g, dtype=torch.float64)
    for n, (q64, x064) in problems.items():
        fstar = q64.min_value()
        lr, t = tuned_gd(q64, x064, fstar, steps)
        rel = (t.f[-1] - fstar) / (t.f[0] - fstar)
        out["gd"][n] = {"lr": lr, "rel_gap_mean": float(rel.mean()), "rel_gap_std": float(rel.std())}
    for name in models:
        net, card = load_model(pretrained_path(name))
        memory = net.config.memory
        rows = {}
        for n, (q64, x064) in problems.items():
            fstar = q64.min_value()
            t = run(LSR1Solver(model=net, memory=memory), q64.to(dtype=torch.float32), x064.float(), steps,
                    keep_operators=False)
            ok = ~t.diverged
            rel = (t.f[-1].double() - fstar) / (t.f[0].double() - fstar)
            rows[n] = {"rel_gap_mean": float(rel[ok].mean()) if ok.any() else None,
                       "rel_gap_std": float(rel[ok].std()) if ok.sum() > 1 else None,
                       "diverged": int((~ok).sum()), "problems": int(ok.numel())}
        out["models"][name] = {"trained_n": card.get("train_config", {}).get("n"), "memory": memory, "rows": rows}
    return out


def markdown(res: dict, cmd: str) -> str:
    dims = res["dims"]
    lines = ["## Dimension generalisation of the quadratic models", "", f"Command: `{cmd}`", "",
             f"Mean relative gap (f(x_{res['steps']}) − f*)/(f(x₀) − f*) ± std over the problems (32 per N, 8 at "
             "N = 1000; lower is better; a diverged run is counted separately, not in the mean). Quadratics "
             "H = Q diag(λ) Qᵀ, log₁₀ λ uniform on [−3, 0].", "",
             "| model (trained at N) | " + " | ".join(f"N = {n}" for n in dims) + " |",
             "|---|" + "---:|" * len(dims)]
    for name, m in res["models"].items():
        cells = []
        for n in dims:
            r = m["rows"][str(n)] if str(n) in m["rows"] else m["rows"][n]
            if r["rel_gap_mean"] is None:
                cells.append(f"diverged ({r['diverged']}/{r['problems']})")
            else:
                std = f" ± {r['rel_gap_std']:.2g}" if r["rel_gap_std"] is not None else ""
                div = f", {r['diverged']}/{r['problems']} diverged" if r["diverged"] else ""
                cells.append(f"{r['rel_gap_mean']:.3g}{std}{div}")
        lines.append(f"| `{name}` (N = {m['trained_n']}, L = {m['memory']}) | " + " | ".join(cells) + " |")
    gd = res["gd"]
    lines.append("| gradient descent, tuned step | " + " | ".join(
        f"{(gd[str(n)] if str(n) in gd else gd[n])['rel_gap_mean']:.3g}" for n in dims) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("dims"))
    ap.add_argument("--models", nargs="+", default=None,
                    help="shipped model names (default: quadratic, profile_quadratic and their qn forms where shipped)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    models = a.models or [m for m in ("quadratic", "profile_quadratic", "qn_quadratic")
                          if (PRETRAINED_DIR / f"{m}.json").exists()]
    res = evaluate(models, steps=a.steps)
    cmd = command("dims", f"--models {' '.join(a.models)}" if a.models else "")
    # the page is rendered from the result as the JSON stores it (dimension keys as strings)
    write_report(a.out, "dims", res, markdown(json.loads(json.dumps(res)), cmd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
