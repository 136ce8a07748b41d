"""The qn form against what a user would pick instead, at equal evaluations.

    python -m experiments.peers [--iters 300] [--dims 2 10 100] [--sets generality mgh andrei] [--out docs]

Problems: the generality suite (:mod:`experiments.extra_functions`: each function at N ∈ dims, from its standard
start, or its first seeded start where it has none) and ten Moré–Garbow–Hillstrom least-squares problems
(:mod:`lsr1_core.objectives.mgh`, N = 2–3 or N ∈ {10, 100}; a set nothing in the project was tuned on), each from
x₀, 10·x₀ and 100·x₀ (MGH's convention), and seventeen large-scale functions of Andrei's collection and CUTEst
(:mod:`experiments.andrei_functions`, N ∈ {10, 100}, known f*; the development set on which qn_bfgs's update, scale
and line search were chosen, so not held out for those choices; nothing trains on it), from the same multiples of
their literature starts. Solvers, all in float64, all with max|g| ≤ 1e-9 (gtol), a relative
change of f ≤ 1e-15 (ftol), ``--iters`` iterations and at most 10 × iters evaluations:

  * the qn form untrained (``LSR1Config.qn()``, with step lengthening) and its ablation without lengthening,
  * ``LSR1Config.qn_bfgs()`` (BFGS update, newest-pair γ, strong-Wolfe search, m = 10) and ablations that change one of
    those three back (and the SR1 form with the strong-Wolfe search, with and without the newest-pair γ),
  * the project's L-BFGS (m = 8, strong Wolfe),
  * scipy.optimize.minimize: L-BFGS-B (m = 10), BFGS, trust-krylov and trust-ncg (Hessian-vector products by
    autograd; each product counted as one evaluation),
  * torch.optim.LBFGS (history 10, strong Wolfe, max_eval = 1.25 × iters, its defaults otherwise).

Every evaluation of f and ∇f is counted where it happens (a wrapper around the objective), so every solver is
measured the same way: the evaluations it had spent when it first evaluated a point with
f − f* ≤ 10⁻⁷·(f₀ − f*) (Moré & Wild's test with τ = 10⁻⁷), its total evaluations, and its wall time. The
performance profile over evaluations gives each solver's area over log₂ τ ∈ [0, 5] (5 is a perfect score).
Writes ``<out>/results/peers.json`` and ``<out>/results_peers.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.objectives.mgh import MGH_FUNCTIONS, mgh_function
from lsr1_core.solvers import make_solver, run
from ._report import command, out_dir, write_report
from .andrei_functions import ANDREI_DIMS, ANDREI_FUNCTIONS, AndreiFunction
from .extra_functions import EXTRA_FUNCTIONS, defined_dim, extra_function
from .generality import clean

TAU = 1e-7
GTOL = 1e-9
FTOL = 1e-15
MULTIPLIERS = (1.0, 10.0, 100.0)
PROFILE_MAX = 5.0
BUDGET_PER_ITER = 10  # every solver stops after 10 × iters evaluations (trust-ncg's CG can spend N per iteration)


class BudgetExhausted(Exception):
    """Raised inside a solver when it has used its evaluation budget (recorded, not an error)."""


class Counted:
    """A one-row objective that records f at every evaluation (value_and_grad or value; hvp counted apart) and
    stops the solver (:class:`BudgetExhausted`) once it has used ``budget`` evaluations."""

    def __init__(self, obj, budget: int | None = None):
        self.obj = obj
        self.fs: list[float] = []
        self.hvps = 0
        self.budget = budget

    def _count(self, f: float) -> None:
        self.fs.append(f)
        if self.budget is not None and len(self.fs) >= self.budget:
            raise BudgetExhausted

    def __getattr__(self, name):
        return getattr(self.obj, name)

    def value_and_grad(self, x):
        f, g = self.obj.value_and_grad(x)
        self._count(float(f.detach()[0]))
        return f, g

    def value(self, x):
        f = self.obj.value(x)
        self._count(float(f.detach()[0]))
        return f

    def hvp(self, x, v):
        self.hvps += 1
        self._count(math.inf)  # counted as one evaluation, at no point of f
        return self.obj.hvp(x, v)


def _run_project(solver, obj, x0, iters):
    run(solver, obj, x0, iters, record_vectors=False, keep_operators=False, gtol=GTOL, ftol=FTOL)


def _qn(obj, x0, iters, **rules):
    _run_project(LSR1Solver(model=LSR1Net(LSR1Config.qn(**rules))), obj, x0, iters)


def _qn_bfgs(obj, x0, iters, **rules):
    _run_project(LSR1Solver(model=LSR1Net(LSR1Config.qn_bfgs(**rules))), obj, x0, iters)


def _lbfgs(obj, x0, iters):
    _run_project(make_solver("lbfgs", memory=8, line_search="strong_wolfe"), obj, x0, iters)


def _scipy(method):
    def fit(obj, x0, iters):
        from scipy.optimize import minimize

        def fun(v):
            f, g = obj.value_and_grad(torch.as_tensor(v, dtype=torch.float64).view(1, -1))
            return float(f[0]), g[0].detach().numpy().astype(np.float64)

        def hessp(v, p):
            x = torch.as_tensor(v, dtype=torch.float64).view(1, -1)
            return obj.hvp(x, torch.as_tensor(p, dtype=torch.float64).view(1, -1))[0].detach().numpy()

        opts = {"maxiter": iters, "gtol": GTOL}
        if method == "L-BFGS-B":
            opts["ftol"] = FTOL
        kw = {"hessp": hessp} if method.startswith("trust") else {}
        minimize(fun, x0[0].numpy(), jac=True, method=method, options=opts, **kw)
    return fit


def _torch_lbfgs(obj, x0, iters):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=iters, history_size=10, line_search_fn="strong_wolfe",
                            tolerance_grad=GTOL, tolerance_change=FTOL)

    def closure():
        opt.zero_grad()
        f, g = obj.value_and_grad(x.detach())
        x.grad = g.detach().clone()
        return f.detach()[0]

    opt.step(closure)


SOLVERS = {
    "qn": ("L-SR1 qn (untrained, lengthening)", lambda o, x, k: _qn(o, x, k)),
    "qn_noext": ("L-SR1 qn, no lengthening (ablation)", lambda o, x, k: _qn(o, x, k, extrapolate=0)),
    "qn_halve": ("L-SR1 qn, halving instead of interpolation (ablation)",
                 lambda o, x, k: _qn(o, x, k, backtrack="halve")),
    "qn_before": ("L-SR1 qn as before this round (halving, no lengthening)",
                  lambda o, x, k: _qn(o, x, k, backtrack="halve", extrapolate=0)),
    "qn_wolfe": ("L-SR1 qn with the strong-Wolfe search (ablation)",
                 lambda o, x, k: _qn(o, x, k, backtrack="wolfe", extrapolate=0)),
    "qn_wolfe_bb": ("L-SR1 qn, strong Wolfe + newest-pair γ, SR1 update (ablation)",
                    lambda o, x, k: _qn(o, x, k, backtrack="wolfe", extrapolate=0, h0="bb", gamma_factor=1.0)),
    "qn_bfgs": ("L-SR1 qn_bfgs (BFGS update, newest-pair γ, strong Wolfe, m = 10)", lambda o, x, k: _qn_bfgs(o, x, k)),
    "qn_bfgs_armijo": ("qn_bfgs with the Armijo search and lengthening (ablation)",
                       lambda o, x, k: _qn_bfgs(o, x, k, backtrack="interpolate", extrapolate=10)),
    "qn_bfgs_envelope": ("qn_bfgs with the envelope γ and two-scale H₀ (ablation)",
                         lambda o, x, k: _qn_bfgs(o, x, k, h0="two_scale", gamma_factor=0.5)),
    "qn_bfgs_m8": ("qn_bfgs with 8 pairs in memory, the project's L-BFGS's m (ablation; qn_bfgs keeps 10)",
                   lambda o, x, k: _qn_bfgs(o, x, k, memory=8)),
    "qn_bfgs_probe_pair": ("qn_bfgs keeping the probe's pair in memory (ablation; the rule before 2026-12-06 08:40)",
                           lambda o, x, k: _qn_bfgs(o, x, k, probe_pair=True)),
    "lbfgs": ("project L-BFGS (m = 8, strong Wolfe)", _lbfgs),
    "scipy_lbfgsb": ("scipy L-BFGS-B", _scipy("L-BFGS-B")),
    "scipy_bfgs": ("scipy BFGS", _scipy("BFGS")),
    "scipy_trust_krylov": ("scipy trust-krylov (Hv)", _scipy("trust-krylov")),
    "scipy_trust_ncg": ("scipy trust-ncg (Hv)", _scipy("trust-ncg")),
    "torch_lbfgs": ("torch.optim.LBFGS (strong Wolfe)", _torch_lbfgs),
}


def problems(sets=("generality", "mgh", "andrei"), dims=(2, 10, 100)):
    """(set, name, objective, x0 (1, N), f*) for every problem × start multiplier."""
    out = []
    if "generality" in sets:
        seen = set()
        for fn in sorted(EXTRA_FUNCTIONS):
            for d in dims:
                n = defined_dim(fn, d)
                if (fn, n) in seen:
                    continue
                seen.add((fn, n))
                obj = extra_function(fn, n)
                std = obj.standard_start()
                x0 = std if std is not None else obj.starts(1, seed=77 + n)
                out += [("generality", f"{fn}_n{n}", obj, m * x0.to(torch.float64),
                         float(obj.min_value().flatten()[0]), m) for m in MULTIPLIERS]
    if "mgh" in sets:
        for fn, cls in sorted(MGH_FUNCTIONS.items()):
            for n in ([cls.fixed_dim] if cls.fixed_dim else [d for d in dims if d >= 10] or [10]):
                obj = mgh_function(fn, n)
                out += [("mgh", f"{fn}_n{n}", obj, m * obj.standard_start(), 0.0, m) for m in MULTIPLIERS]
    if "andrei" in sets:
        for fn in ANDREI_FUNCTIONS:
            for n in ANDREI_DIMS:
                obj = AndreiFunction(fn, n + (-n % 4 if fn == "chained_wood" else 0))
                x0 = obj.standard_start()
                mults = MULTIPLIERS if bool(x0.abs().amax() > 0) else (1.0,)  # 0 × anything is the same start
                out += [("andrei", obj.name, obj, m * x0, obj.f_star(), m) for m in mults]
    return out


def run_one(solver: str, obj, x0, fstar: float, iters: int) -> dict:
    c = Counted(obj, budget=BUDGET_PER_ITER * iters)
    f0 = float(obj.value(x0)[0])
    target = fstar + TAU * (f0 - fstar)
    t0 = time.perf_counter()
    err, exhausted = None, False
    try:
        SOLVERS[solver][1](c, x0.clone(), iters)
    except BudgetExhausted:
        exhausted = True
    except Exception as e:  # noqa: BLE001 — recorded; a crash counts as unsolved
        err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    wall = time.perf_counter() - t0
    fs = np.array(c.fs) if c.fs else np.array([math.inf])
    hit = np.nonzero(fs <= target)[0]
    finite = fs[np.isfinite(fs)]
    return {"evals_to_solve": int(hit[0]) + 1 if len(hit) else None, "evals": len(c.fs), "hvps": c.hvps,
            "best_gap": float(finite.min() - fstar) if len(finite) else None, "gap0": f0 - fstar,
            "wall_s": wall, "error": err, "budget_exhausted": exhausted}


def profile_area(evals: dict[str, list], grid: int = 501) -> dict[str, float]:
    """Performance-profile area over log₂ τ ∈ [0, PROFILE_MAX] (Dolan & Moré) from per-solver lists of
    evaluations to solve (None: unsolved), problem by problem. Problems that no solver solved are left out."""
    names = list(evals)
    n = len(evals[names[0]])
    best = []
    for i in range(n):
        vals = [evals[s][i] for s in names if evals[s][i] is not None]
        best.append(min(vals) if vals else None)
    keep = [i for i in range(n) if best[i] is not None]
    taus = np.linspace(0, PROFILE_MAX, grid)
    out = {}
    for s in names:
        ratios = np.array([math.log2(evals[s][i] / best[i]) if evals[s][i] is not None else math.inf
                           for i in keep])
        rho = np.array([(ratios <= t).mean() if len(ratios) else 0.0 for t in taus])
        out[s] = float(np.trapezoid(rho, taus)) if hasattr(np, "trapezoid") else float(np.trapz(rho, taus))
    return out


def analyse(records: list[dict], solvers) -> dict:
    keys = sorted({(r["set"], r["problem"], r["mult"]) for r in records})
    table = {(r["set"], r["problem"], r["mult"], r["solver"]): r for r in records}
    res = {"problems": len(keys), "by_set": {}}
    for subset in ("all", "generality", "mgh", "andrei"):
        ks = [k for k in keys if subset == "all" or k[0] == subset]
        if not ks:
            continue
        ev = {s: [table[k + (s,)]["evals_to_solve"] for k in ks] for s in solvers}
        area = profile_area(ev)
        solved = {s: sum(v is not None for v in ev[s]) for s in solvers}
        ratio = {}
        for s in solvers:
            for ref in (r for r in ("lbfgs", "scipy_lbfgsb", "torch_lbfgs") if r in ev):
                pairs = [(a, b) for a, b in zip(ev[s], ev[ref]) if a is not None and b is not None]
                if pairs:
                    ratio[f"{s}/{ref}"] = (math.exp(statistics.fmean(math.log(a / b) for a, b in pairs)), len(pairs))
        wall = {s: sum(table[k + (s,)]["wall_s"] for k in ks) for s in solvers}
        evals = {s: sum(table[k + (s,)]["evals"] for k in ks) for s in solvers}
        res["by_set"][subset] = {"n": len(ks), "area": area, "solved": solved, "ratio": ratio, "wall_s": wall,
                                 "evals": evals}
    return res


def _targets(d: dict, s: str) -> list[str]:
    """Issue 23's three evaluation targets for solver ``s`` against the project's L-BFGS and scipy L-BFGS-B."""
    def verdict(ok):
        return "met" if ok else "**not met**"
    area, solved = d["area"], d["solved"]
    r = d["ratio"].get(f"{s}/lbfgs", (math.nan, 0))[0]
    return [f"- Profile area ≥ the project's L-BFGS's and ≥ scipy L-BFGS-B's: {area[s]:.2f} vs {area['lbfgs']:.2f} "
            f"and {area['scipy_lbfgsb']:.2f} — {verdict(area[s] >= max(area['lbfgs'], area['scipy_lbfgsb']))}.",
            f"- Solves at least as many: {solved[s]} vs {solved['lbfgs']} and {solved['scipy_lbfgsb']} — "
            f"{verdict(solved[s] >= max(solved['lbfgs'], solved['scipy_lbfgsb']))}.",
            f"- Evaluations to solve ≤ 1.0× L-BFGS's where both solve (geometric mean): {r:.3f}× — "
            f"{verdict(r <= 1.0)}.", ""]


def markdown(res: dict, records: list[dict], solvers, cmd: str) -> str:
    lines = ["# The qn form against its peers, at equal evaluations", "",
             f"Regenerate: `{cmd}` (float64, one thread). Problems: {res['problems']} (function × N × start "
             f"multiplier 1/10/100). Solved: a point with f − f* ≤ {TAU:g}·(f₀ − f*) was evaluated; evaluations are "
             "counted where they happen (f and ∇f together count one; scipy's trust-region methods' Hessian-vector "
             "products count one each). Every solver: max|g| ≤ 1e-9, relative change of f ≤ 1e-15, the same "
             "iteration limit and at most 10 evaluations per iteration in all. Profile area: performance profile over evaluations, area over log₂ τ ∈ [0, 5] "
             "(5 = fewest evaluations on every problem); problems no solver solved are left out.", ""]
    for subset, d in res["by_set"].items():
        lines += [f"## {subset} ({d['n']} problems)", "",
                  "| solver | solved | profile area | evaluations to solve ÷ project L-BFGS (geo. mean, both solved) "
                  "| ÷ scipy L-BFGS-B | ÷ torch LBFGS | total evaluations | wall time (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in solvers:
            def rt(ref):
                v = d["ratio"].get(f"{s}/{ref}")
                return f"{v[0]:.2f} (n = {v[1]})" if v else "—"
            lines.append(f"| {SOLVERS[s][0]} | {d['solved'][s]} | {d['area'][s]:.2f} | {rt('lbfgs')} | "
                         f"{rt('scipy_lbfgsb')} | {rt('torch_lbfgs')} | {d['evals'][s]} | {d['wall_s'][s]:.1f} |")
        lines.append("")
    d = res["by_set"].get("all")
    if d and "qn" in d["area"] and "lbfgs" in d["area"] and "scipy_lbfgsb" in d["area"]:
        lines += ["## Issue 23's targets (all problems)", ""]
        if "qn_bfgs" in d["area"]:
            lines += ["For the default without a card, `LSR1Config.qn_bfgs()` (BFGS update, newest-pair γ, strong-Wolfe "
                      "search, 10 pairs; what `LSR1Optimizer(params)` and `LSR1Solver()` run):", ""] + _targets(
                d, "qn_bfgs")
        lines += ["For the SR1 qn form, `LSR1Config.qn()` (the form of every qn card and of meta-training):", ""] + (
            _targets(d, "qn"))
    lines += ["## Per problem: evaluations to solve (— unsolved)", "",
              "| problem | ×x₀ | " + " | ".join(solvers) + " |", "|---|---|" + "---|" * len(solvers)]
    table = {(r["set"], r["problem"], r["mult"], r["solver"]): r for r in records}
    for k in sorted({(r["set"], r["problem"], r["mult"]) for r in records}):
        cells = []
        for s in solvers:
            r = table[k + (s,)]
            cells.append(str(r["evals_to_solve"]) if r["evals_to_solve"] is not None else
                         ("err" if r["error"] else "—"))
        lines.append(f"| {k[0]}/{k[1]} | {k[2]:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("peers"), description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 10, 100])
    ap.add_argument("--sets", nargs="+", default=["generality", "mgh", "andrei"],
                    choices=["generality", "mgh", "andrei"])
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    ap.add_argument("--out", default="docs")
    ap.add_argument("--rebuild", action="store_true", help="only re-render <out>/results_peers.md from "
                    "<out>/results/peers.json")
    ap.add_argument("--reuse", default=None, help="a peers.json whose records of the solvers not in --solvers are "
                    "kept (same problems), to re-run only some solvers")
    a = ap.parse_args(argv)
    if a.iters < 1 or any(d < 1 for d in a.dims):
        ap.error("--iters and --dims must be positive integers")
    out = out_dir(ap, a.out)
    if a.rebuild:
        try:
            data = json.loads((out / "results" / "peers.json").read_text())
            records = data["records"]
            solvers = [s for s in SOLVERS if any(r["solver"] == s for r in records)]
            text = markdown(analyse(records, solvers), records, solvers, data["command"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--rebuild: cannot read {out / 'results' / 'peers.json'} ({e})")
        write_report(out, "peers", None, text, echo=False)
        return 0
    reused = []
    if a.reuse:
        try:
            reused = [r for r in json.loads(Path(a.reuse).read_text())["records"] if r["solver"] not in a.solvers]
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--reuse {a.reuse}: cannot read its records ({e})")
    torch.set_num_threads(1)
    probs = problems(a.sets, a.dims)
    records = []
    for i, (subset, name, obj, x0, fstar, m) in enumerate(probs):
        for s in a.solvers:
            rec = run_one(s, obj, x0, fstar, a.iters)
            records.append(dict(rec, set=subset, problem=name, mult=m, solver=s))
        print(f"[{i + 1}/{len(probs)}] {subset}/{name} ×{m:g}: " + ", ".join(
            f"{s} {r['evals_to_solve']}" for s, r in zip(a.solvers, records[-len(a.solvers):])), file=sys.stderr)
    keys = {(r["set"], r["problem"], r["mult"]) for r in records}
    records += [r for r in reused if (r["set"], r["problem"], r["mult"]) in keys]
    solvers = [s for s in SOLVERS if any(r["solver"] == s for r in records)]
    res = analyse(records, solvers)
    cmd = command("peers", *(argv if argv is not None else sys.argv[1:]))
    write_report(out, "peers", clean({"records": records, "summary": res, "tau": TAU, "command": cmd}),
                 markdown(res, records, solvers, cmd), echo=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
