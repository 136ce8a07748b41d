"""Performance profiles on the paper's 30-problem suite (C.2.2), Figure 3c.

    python -m lsr1_core.experiments.profiles [--steps 100] [--families ...] [--dims ...]

Learning rates of the non-trainable solvers are tuned per family by grid search (LR_GRIDS in
lsr1_core.solvers.tuning) on the family's N = 50 problem; then every solver runs ``steps`` iterations on every
problem and is scored by the paper's measure m = ‖x̂ − x*‖ / ‖x_w − x*‖ (failures = inf). Writes
docs/results/profiles.json, docs/figures/fig3c_profiles.png and docs/results_profiles.md.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..analysis import performance_measure, performance_profile, profile_auc
from ..analysis.profiles import MEASURE_FLOOR
from ..errors import LSR1Error
from ..learned import LSR1Solver
from ..objectives import PROFILE_DIMS, PROFILE_FAMILIES, profile_suite
from ..solvers import make_solver, run
from ..solvers.tuning import tune_lr

TUNED = ("gd", "adam", "adahessian", "lodo")
FIXED = {"lbfgs": {"memory": 8, "line_search": "strong_wolfe"}, "sr1": {"memory": 8, "line_search": "armijo"}}
LSR1_MODELS = {"lsr1": "pretrained/quadratic", "lsr1_nosec": "pretrained/quadratic_nosec",
               "lsr1_qn": "pretrained/qn_quadratic", "lsr1_qn_L64": "pretrained/qn_quadratic",
               "lsr1_qn_skip": "pretrained/qn_quadratic", "lsr1_qn_envelope": "pretrained/qn_quadratic"}
# Test buffer sizes. The paper form runs with Table 7's test value L = 64 (``memory``); the qn form with
# L = 8, the memory L-BFGS and SR1 get here, and once more at L = 64 (``lsr1_qn_L64``): its positive
# semi-definite SR1 skips more pairs as the memory grows (measured, docs/results_profiles.md).
QN_MEMORY = {"lsr1_qn": 8, "lsr1_qn_skip": 8, "lsr1_qn_envelope": 8}
# The qn form's initial matrix (LSR1Config.h0): the two-scale rule, and once with H₀ = γI as its ablation row.
QN_H0 = {"lsr1_qn": "two_scale", "lsr1_qn_L64": "two_scale", "lsr1_qn_skip": "two_scale", "lsr1_qn_envelope": "envelope"}
# What the qn form does with a pair SR1 cannot use positively (LSR1Config.fallback): the BFGS update (the default),
# and skipping it as the two ablation rows (two-scale H₀; H₀ = γI, the rule before both changes).
QN_FALLBACK = {"lsr1_qn": "bfgs", "lsr1_qn_L64": "bfgs", "lsr1_qn_skip": "skip", "lsr1_qn_envelope": "skip"}
# Table 7: one model per task, trained at N = 100 (quadratics → the quadratic families). A family whose
# model is not shipped falls back to the N = 2 quadratic model (C.2.1); the results record which was used.
FAMILY_TASK = {"rosenbrock": "rosenbrock", "rastrigin": "rastrigin"}


def model_for(name: str, family: str) -> str:
    """The checkpoint (path without suffix) that L-SR1 variant ``name`` uses on ``family``."""
    suffix = "_nosec" if name.endswith("_nosec") else ""
    task = FAMILY_TASK.get(family, "quadratic")
    own = f"pretrained/{'qn_' if name.startswith('lsr1_qn') else ''}profile_{task}{suffix}"
    return own if Path(own + ".json").exists() else LSR1_MODELS[name]


def build(name: str, lr: float | None, memory: int, family: str = "quad_cond1"):
    if name in LSR1_MODELS:
        s = LSR1Solver(checkpoint=model_for(name, family), memory=QN_MEMORY.get(name, memory), h0=QN_H0.get(name),
                        fallback=QN_FALLBACK.get(name))
        s.net.double()
        return s
    if name in FIXED:
        return make_solver(name, **FIXED[name])
    return make_solver(name, lr=lr)


def compute(steps: int = 100, families=PROFILE_FAMILIES, dims=PROFILE_DIMS, solvers=None, memory: int = 64,
            progress: Callable[[float, str], None] | None = None) -> dict:
    solvers = list(solvers or (list(TUNED) + list(FIXED) + [m for m, p in LSR1_MODELS.items()
                                                            if Path(p + ".json").exists()]))
    problems = profile_suite(dims=dims, families=families)
    tuned: dict[str, dict[str, float | None]] = {}
    total = len(families) * len([s for s in solvers if s in TUNED]) + len(problems) * len(solvers)
    done = 0

    def tick(msg):
        nonlocal done
        done += 1
        if progress:
            progress(done / total, msg)

    for fam in families:
        tp = [p for p in problems if p.family == fam]
        small = min(tp, key=lambda p: p.dim)
        for s in solvers:
            if s in TUNED:
                lr, _ = tune_lr(s, [(small.objective, small.x0)], steps=steps)
                tuned.setdefault(fam, {})[s] = lr
                tick(f"tuned {s} on {fam}: lr = {lr}")
    table, finals, times = {}, {}, {}
    for p in problems:
        xs = p.x_star()
        fx = {}
        for s in solvers:
            lr = tuned.get(p.family, {}).get(s)
            t0 = time.perf_counter()
            try:
                if s in TUNED and lr is None:
                    raise LSR1Error("no stable learning rate in the grid")
                tr = run(build(s, lr, memory, p.family), p.objective, p.x0, steps, record_vectors=False,
                         keep_operators=False)
                fx[s] = None if bool(tr.diverged.any()) else tr.x[-1, 0].double().numpy()
            except (LSR1Error, RuntimeError) as e:
                fx[s] = None
            times.setdefault(s, 0.0)
            times[s] += time.perf_counter() - t0
            tick(f"{s} on {p.name}")
        if xs is None:  # Rastrigin: the global minimiser is the origin (known); keep the code general
            continue
        table[p.name] = performance_measure(fx, xs[0].double().numpy())
        finals[p.name] = {s: (None if v is None else float(np.linalg.norm(v - xs[0].double().numpy())))
                          for s, v in fx.items()}
    models = {s: {fam: Path(model_for(s, fam)).name for fam in families} for s in solvers if s in LSR1_MODELS}
    return score({"steps": steps, "lsr1_models": models, "families": list(families), "dims": list(dims),
                  "memory": memory, "qn_memory": dict(QN_MEMORY), "qn_h0": dict(QN_H0), "qn_fallback": dict(QN_FALLBACK), "tuned_lr": tuned, "table": table,
                  "distance": finals, "seconds": times})


def score(res: dict) -> dict:
    """Profiles and areas from ``res["table"]``: measures floored at machine epsilon (solves to rounding tie),
    and, for comparison with earlier reports, the areas under the exact-zero rule (``auc_exact_zero``)."""
    table = {p: {s: (math.inf if v is None else v) for s, v in row.items()} for p, row in res["table"].items()}
    taus, prof = performance_profile(table)
    t0, p0 = performance_profile(table, floor=0.0)
    return {**res, "measure_floor": MEASURE_FLOOR, "taus": taus.tolist(),
            "profile": {s: v.tolist() for s, v in prof.items()},
            "auc": {s: profile_auc(taus, np.array(v)) for s, v in prof.items()},
            "auc_exact_zero": {s: profile_auc(t0, np.array(v)) for s, v in p0.items()}}


NAMES = {"gd": "gradient descent", "adam": "Adam", "adahessian": "AdaHessian", "lodo": "LODO", "lbfgs": "L-BFGS",
         "sr1": "SR1 (classical, Armijo)", "lsr1": "L-SR1 (paper form)", "lsr1_nosec": "L-SR1 w/o secant (paper form)",
         "lsr1_qn": "L-SR1 (scale-free qn form, L = 8)", "lsr1_qn_L64": "L-SR1 (scale-free qn form, L = 64)",
         "lsr1_qn_skip": "L-SR1 (qn form, L = 8, no BFGS fallback: ablation)",
         "lsr1_qn_envelope": "L-SR1 (qn form, L = 8, H₀ = γI, no BFGS fallback: ablation)"}


def plot(res: dict, path: Path) -> None:
    import matplotlib  # optional and heavy: only the figures need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for s, rho in sorted(res["profile"].items(), key=lambda kv: -res["auc"][kv[0]]):
        ax.step(res["taus"], rho, where="post", label=f"{NAMES.get(s, s)} (area {res['auc'][s]:.2f})")
    ax.set_xscale("log")
    ax.set_xlabel("τ (ratio to the best solver's measure)")
    ax.set_ylabel("fraction of problems with r ≤ τ")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Performance profiles, {len(res['table'])} problems, {res['steps']} iterations")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res: dict, cmd: str) -> str:
    lines = ["## Figure 3c: performance profiles", "", f"Command: `{cmd}`", "",
             f"{len(res['table'])} problems (C.2.2: diagonal quadratics with condition 1, 100, 1000, 10000 and b = 0, "
             f"Rosenbrock, Rastrigin; N ∈ {res['dims']}), one fixed start each, {res['steps']} iterations. "
             "Measure m = ‖x̂ − x*‖/‖x_w − x*‖ (x_w: the worst solver's final point); a diverged run counts as a "
             f"failure. The paper-form L-SR1 runs with a test buffer of L = {res['memory']} (Table 7's test value), the qn "
             f"form with L = {res.get('qn_memory', {}).get('lsr1_qn', res['memory'])} (the memory of L-BFGS and SR1 "
             f"here) and again with L = {res['memory']}, both with the two-scale H₀ (`h0=\"two_scale\"`) and the BFGS fallback "
             f"(`fallback=\"bfgs\"`), and at L = 8 without the fallback and without both changes (the ablations); "
             f"each, per family, with "
             "the checkpoint below (Table 7's per-task model trained at N = 100 where one is shipped, else the "
             "N = 2 quadratic model of C.2.1).", "",
             "Measures below machine epsilon count as exact solves (they tie); the last column scores the same runs "
             "under the earlier rule, where a final point that lands on x* bit for bit beats one 1e-154 away "
             "infinitely, so every solver but the lucky one 'fails' that problem (this hit the qn form on all five "
             "condition-1 quadratics).", "",
             "| solver | area under the profile (log τ, 0–1) | fraction best (τ = 1) | wall time (s) | area, exact-zero rule |",
             "|---|---:|---:|---:|---:|"]
    for s in sorted(res["auc"], key=lambda s: -res["auc"][s]):
        ez = res.get("auc_exact_zero", {}).get(s)
        lines.append(f"| {NAMES.get(s, s)} | {res['auc'][s]:.3f} | {res['profile'][s][0]:.2f} | "
                     f"{res['seconds'].get(s, 0):.1f} | {'' if ez is None else f'{ez:.3f}'} |")
    if res.get("lsr1_models"):
        fams = res["families"]
        lines += ["", "| L-SR1 variant | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
        for s_, d in res["lsr1_models"].items():
            lines.append(f"| {NAMES.get(s_, s_)} | " + " | ".join(f"`{d[f]}`" for f in fams) + " |")
    lines += ["", "Learning rates chosen by the grid search (per family, on its N = 50 problem):", "",
              "| family | " + " | ".join(TUNED) + " |", "|---|" + "---:|" * len(TUNED)]
    for fam, d in res["tuned_lr"].items():
        lines.append(f"| {fam} | " + " | ".join(f"{d.get(s):.3g}" if d.get(s) else "—" for s in TUNED) + " |")
    lines += ["", "![Figure 3c](figures/fig3c_profiles.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lsr1_core.experiments.profiles")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default="docs")
    ap.add_argument("--rescore", action="store_true",
                    help="recompute the profiles from OUT/results/profiles.json without re-running the solvers")
    args = ap.parse_args(argv)
    bar = tqdm(total=1.0, bar_format="{l_bar}{bar}| {postfix}")

    def progress(frac, msg):
        bar.n = frac
        bar.set_postfix_str(msg[:60])
        bar.refresh()

    if args.rescore:
        res = score(json.loads((Path(args.out) / "results" / "profiles.json").read_text()))
    else:
        res = compute(steps=args.steps, progress=progress)
    bar.close()
    out = Path(args.out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "profiles.json").write_text(json.dumps(res, indent=1, default=lambda o: None))
    plot(res, out / "figures" / "fig3c_profiles.png")
    cmd = "python -m lsr1_core.experiments.profiles" + (f" --steps {args.steps}" if args.steps != 100 else "")
    (out / "results_profiles.md").write_text(markdown(res, cmd) + "\n")
    print((out / "results_profiles.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
