"""Reproduction of the paper's quadratic experiments (Figure 3a/3b) and dimension generalisation.

    python -m experiments.quadratics [--sec pretrained/quadratic --nosec pretrained/quadratic_nosec]

Writes docs/results/quadratics.json, docs/figures/fig3a_objective.png, docs/figures/fig3b_cosine.png,
docs/figures/dim_generalisation.png and the markdown section docs/results_quadratics.md.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from lsr1_core.analysis import trace_newton_cosines
from lsr1_core.learned.io import load_model
from lsr1_core.learned import LSR1Solver
from lsr1_core.objectives import quadratic_split
from lsr1_core.objectives.quadratic import spectrum_quadratics
from lsr1_core.solvers import make_solver, run

from ._report import command, write_report

BUFFERS = (1, 2, 4, 8)
STEPS = 20
GD_GRID = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 2.8)


def _summary(trace, q, fstar):
    gap = (trace.f - fstar.to(trace.f)).double()
    cos = trace_newton_cosines(trace, q).double()
    return {"f_mean": trace.f.double().mean(1).tolist(),
            "gap_mean": gap.mean(1).tolist(),
            "gap_std": gap.std(1).tolist(),
            "gap_median": gap.median(1).values.tolist(),
            "gap_q25": gap.quantile(0.25, dim=1).tolist(),
            "gap_q75": gap.quantile(0.75, dim=1).tolist(),
            "cos_mean": cos.mean(1).tolist(),
            "cos_std": cos.std(1).tolist(),
            "diverged": int(trace.diverged.sum())}


def tuned_gd(q, x0, fstar, steps=STEPS):
    best = None
    for lr in GD_GRID:
        t = run(make_solver("gd", lr=lr), q, x0, steps)
        score = float((t.f[-1] - fstar).mean()) if not t.diverged.any() else math.inf
        if best is None or score < best[0]:
            best = (score, lr, t)
    return best[1], best[2]


def fig3(sec_path, nosec_path, n=10, steps=STEPS, buffers=BUFFERS, qn_path=None):
    q64, x064 = quadratic_split("test", n=n, dtype=torch.float64)
    fstar = q64.min_value()
    q, x0 = q64.to(dtype=torch.float32), x064.float()
    out = {"n": n, "steps": steps, "f_star_mean": float(fstar.mean()), "buffers": {}}
    nets = {}
    for label, path in (("lsr1", sec_path), ("lsr1_nosec", nosec_path)):
        if path:
            nets[label] = load_model(path)[0]
    # The scale-free form runs in float64 like L-BFGS (it reaches gaps far below float32's resolution).
    qn_net = load_model(qn_path)[0].double() if qn_path else None
    for L in buffers:
        row = {}
        for label, net in nets.items():
            row[label] = _summary(run(LSR1Solver(model=net, memory=L), q, x0, steps), q, fstar)
        if qn_net is not None:
            row["lsr1_qn"] = _summary(run(LSR1Solver(model=qn_net, memory=L), q64, x064, steps), q64, fstar)
        lb = run(make_solver("lbfgs", memory=L, line_search="strong_wolfe"), q64, x064, steps)
        row["lbfgs"] = _summary(lb, q64, fstar)
        out["buffers"][L] = row
    lr, t = tuned_gd(q64, x064, fstar, steps)
    out["gd"] = {"lr": lr, **_summary(t, q64, fstar)}
    return out


def dim_generalisation(sec_path, dims=(2, 10, 100, 1000), steps=STEPS, memory=8):
    net = load_model(sec_path)[0]
    res = {}
    for n in dims:
        g = torch.Generator().manual_seed(31337 + n)
        q64, x064 = spectrum_quadratics(n, 8 if n >= 1000 else 32, generator=g, dtype=torch.float64)
        fstar = q64.min_value()
        t = run(LSR1Solver(model=net, memory=memory), q64.to(dtype=torch.float32), x064.float(), steps,
                keep_operators=False)
        lr, g = tuned_gd(q64, x064, fstar, steps)
        f0 = (t.f[0].double() - fstar)
        res[n] = {"lsr1_rel_gap": float(((t.f[-1].double() - fstar) / f0).mean()),
                  "gd_rel_gap": float(((g.f[-1] - fstar) / f0).mean()), "gd_lr": lr,
                  "lsr1_diverged": int(t.diverged.sum())}
    return res


def plot(results: dict, dims: dict | None, figdir: Path) -> list[Path]:
    import matplotlib  # optional and heavy: only the figures need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg")

    figdir.mkdir(parents=True, exist_ok=True)
    paths = []
    colors = {"lsr1": "tab:blue", "lsr1_nosec": "tab:orange", "lbfgs": "tab:green", "lsr1_qn": "tab:purple"}
    names = {"lsr1": "L-SR1", "lsr1_nosec": "L-SR1 w/o secant", "lbfgs": "L-BFGS", "lsr1_qn": "L-SR1 qn form"}
    for key, fname, ylabel, log in (("gap_median", "fig3a_objective.png", "median f(x_k) − f* (band: 25–75%)", True),
                                     ("cos_mean", "fig3b_cosine.png", "mean cosine to Newton direction", False)):
        Ls = list(results["buffers"])
        fig, axes = plt.subplots(1, len(Ls), figsize=(4 * len(Ls), 3.4), sharey=True)
        for ax, L in zip(np.atleast_1d(axes), Ls):
            for label, s in results["buffers"][L].items():
                y = np.array(s[key])
                x = np.arange(len(y)) if log else np.arange(1, len(y) + 1)
                ax.plot(x, np.clip(y, 1e-12, None) if log else y, color=colors[label], label=names[label])
                if log:
                    ax.fill_between(x, np.clip(s["gap_q25"], 1e-12, None), np.clip(s["gap_q75"], 1e-12, None),
                                    color=colors[label], alpha=0.15)
            g = np.array(results["gd"][key])
            ax.plot(np.arange(len(g)) if log else np.arange(1, len(g) + 1),
                    np.clip(g, 1e-12, None) if log else g, color="gray", ls="--", label=f"GD (lr {results['gd']['lr']})")
            ax.set_title(f"L = {L}")
            ax.set_xlabel("iteration")
            if log:
                ax.set_yscale("log")
        np.atleast_1d(axes)[0].set_ylabel(ylabel)
        np.atleast_1d(axes)[-1].legend(fontsize=8)
        fig.suptitle(f"{results['n']}-D test quadratics (32), model trained at N = 2")
        fig.tight_layout()
        p = figdir / fname
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    if dims:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ns = sorted(int(n) for n in dims)
        ax.plot(ns, [dims[n]["lsr1_rel_gap"] for n in ns], "o-", label="L-SR1 (trained at N = 2)")
        ax.plot(ns, [dims[n]["gd_rel_gap"] for n in ns], "s--", color="gray", label="GD, tuned step")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N")
        ax.set_ylabel("(f(x₂₀) − f*) / (f(x₀) − f*)")
        ax.legend()
        fig.tight_layout()
        p = figdir / "dim_generalisation.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def markdown(results: dict, dims: dict | None, cmd: str) -> str:
    lines = ["## Quadratics: Figure 3a/3b and dimension generalisation", "", f"Command: `{cmd}`", "",
             f"32 test quadratics at N = {results['n']} (C.2.1: H = AᵀA, condition ≤ 1000, unit Frobenius norm, "
             f"unit b; mean f* = {results['f_star_mean']:.1f}), x₀ ~ N(0, I), {results['steps']} iterations. "
             "Mean gap f(x₂₀) − f* ± standard deviation over the 32 problems; cosine to the Newton direction at the "
             "last step.", "",
             "| L | L-SR1 gap mean ± std (median) | w/o secant gap | qn form gap | L-BFGS gap | L-SR1 cos | w/o secant cos "
             "| qn form cos | L-BFGS cos |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for L, row in results["buffers"].items():
        def g(label, key="gap_mean"):
            if label not in row:
                return "—"
            s = row[label]
            if key == "gap_mean":
                return (f"{s['gap_mean'][-1]:.3g} ± {s['gap_std'][-1]:.2g} ({s['gap_median'][-1]:.3g})"
                        + (f" ({s['diverged']} div.)" if s["diverged"] else ""))
            return f"{s['cos_mean'][-1]:.2f}"
        lines.append(f"| {L} | {g('lsr1')} | {g('lsr1_nosec')} | {g('lsr1_qn')} | {g('lbfgs')} | {g('lsr1', 'c')} | "
                     f"{g('lsr1_nosec', 'c')} | {g('lsr1_qn', 'c')} | {g('lbfgs', 'c')} |")
    gd = results["gd"]
    qn = {L: row["lsr1_qn"] for L, row in results["buffers"].items() if "lsr1_qn" in row}
    if qn:
        L = max(qn, key=lambda k: int(k))
        c = qn[L]["cos_mean"]
        k = max(range(len(c)), key=lambda i: c[i])
        lines += ["", f"The scale-free form (qn, `pretrained/qn_quadratic`, run in float64 like L-BFGS): at L = {L} its "
                  f"mean cosine to the Newton direction peaks at {c[k]:.3f} at step {k + 1} (with L ≥ N the stored "
                  f"pairs determine H = ∇²f⁻¹) and its median gap is then {qn[L]['gap_median'][k + 1]:.1e}; past that, "
                  "f − f* is at rounding level and the last-step cosine measures rounding noise, not curvature."]
    lines += ["", f"Gradient descent with its best fixed step from the grid {list(GD_GRID)} (lr = {gd['lr']}): "
              f"gap {gd['gap_mean'][-1]:.3g} ± {gd['gap_std'][-1]:.2g} (median {gd['gap_median'][-1]:.3g}).", "",
              "![Figure 3a](figures/fig3a_objective.png)", "", "![Figure 3b](figures/fig3b_cosine.png)", ""]
    if dims:
        lines += ["### Dimension generalisation (beyond the paper)", "",
                  "The N = 2 model, L = 8, 20 iterations on quadratics of growing N (32 problems; 8 at N = 1000). The "
                  "paper's AᵀA construction cannot meet the condition filter above N ≈ 20 (its condition number grows "
                  "like N²), so these use H = Q diag(λ) Qᵀ with log₁₀λ uniform on [−3, 0] (condition ≤ 1000), unit "
                  "Frobenius norm, unit b (`spectrum_quadratics`). "
                  "Relative remaining gap (f(x₂₀) − f*)/(f(x₀) − f*), lower is better:", "",
                  "| N | L-SR1 | GD (tuned step) |", "|---:|---:|---:|"]
        for n, r in dims.items():
            lines.append(f"| {n} | {r['lsr1_rel_gap']:.3g}{' (' + str(r['lsr1_diverged']) + ' diverged)' if r['lsr1_diverged'] else ''} "
                         f"| {r['gd_rel_gap']:.3g} (lr {r['gd_lr']}) |")
        lines += ["", "![dimension generalisation](figures/dim_generalisation.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("quadratics"))
    ap.add_argument("--sec", default="pretrained/quadratic")
    ap.add_argument("--nosec", default="pretrained/quadratic_nosec")
    ap.add_argument("--qn", default="pretrained/qn_quadratic", help="the scale-free form's checkpoint ('' to leave out)")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--no-dims", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    res = fig3(args.sec, args.nosec, qn_path=args.qn or None)
    dims = None if args.no_dims else dim_generalisation(args.sec)
    write_report(args.out, "quadratics", {"fig3": res, "dims": dims}, None)
    plot(res, dims, Path(args.out) / "figures")
    write_report(args.out, "quadratics", None, markdown(res, dims, command("quadratics", *(argv or []))) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
