"""Where learning pays (issue 22): every shipped card whose scalars were learned, judged on fresh held-out draws.

    python -m experiments.learning [--seeds 4] [--out docs] [--cards qn_logistic,...] [--run DIR]

For each card in ``pretrained/`` that records ``trained_scalars`` (made by ``python -m lsr1_core.pretrained
train-scalars``), the card's model, its own untrained start (the same qn form with every learned scalar at its start
value: H₀ = γI, γ factor ½) and L-BFGS (memory 8, strong Wolfe) run on problems of the card's family drawn with
*judge* seeds (``JUDGE_BASE`` + …): seeds that neither training, validation nor the shipping decision used (the
card's own held-out table, made when it was shipped, is repeated beside it). Every problem is rescaled as the qn
presets do (f̃(y) = c·f(y/s), log10 c, log10 s ~ U(±3)) and pays for every evaluation of f and ∇f (per-problem
counts, the curvature probe and line-search trials included). A cell is the mean best normalised log10 gap within
the budget, with its 95 % t-interval; differences are paired per problem.

``--run DIR`` adds the validation curve of a scalar meta-training run (``python -m lsr1_core.runs start
qn_scalars_logistic`` or the Meta-training page): where its best checkpoint is and how far below iteration 0.

Writes docs/results/learning.json and docs/results_learned.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from experiments._report import command, machine, out_dir, write_report
from lsr1_core.checkpoints import PRETRAINED_DIR
from lsr1_core.meta import scalars
from lsr1_core.meta.families import FAMILIES, JUDGE_BASE, SPLITS
from lsr1_core.meta.heldout import compare_card, format_comparison

TARGET = 0.3


def judge_seeds(family: str, n: int) -> list[int]:
    return scalars.seeds_of(FAMILIES[family], "judge", n)


def scalar_cards(names=None) -> dict[str, dict]:
    out = {}
    for p in sorted(Path(PRETRAINED_DIR).glob("*.json")):
        if names and p.stem not in names:
            continue
        d = json.loads(p.read_text())
        if isinstance(d.get("trained_scalars"), dict):
            out[p.stem] = d
    return out


def run_curve(run_dir: Path) -> dict:
    from lsr1_core.meta.train import read_metric_records

    recs = [r for r in read_metric_records(run_dir) if isinstance(r.get("val_loss"), (int, float))]
    if not recs:
        return {"run": str(run_dir), "points": []}
    best = min(recs, key=lambda r: (r["val_loss"], r["iteration"]))
    return {"run": str(run_dir), "points": [(r["iteration"], r["val_loss"]) for r in recs],
            "iteration0": recs[0]["val_loss"], "best_iteration": best["iteration"], "best": best["val_loss"],
            "last_iteration": recs[-1]["iteration"]}


def evaluate(names, n_seeds: int, log=print) -> dict:
    res = {"cards": {}, "judge_base": JUDGE_BASE}
    for name, card in scalar_cards(names).items():
        fam = card["trained_scalars"]["family"]
        t0 = time.perf_counter()
        h = compare_card(Path(PRETRAINED_DIR) / name, seeds=judge_seeds(fam, n_seeds))
        log(f"[learning] {name} on {fam}: {time.perf_counter() - t0:.0f} s")
        log(format_comparison(h))
        splits = {sp: compare_card(Path(PRETRAINED_DIR) / name, family=sp, seeds=judge_seeds(sp, n_seeds))
                  for sp in SPLITS.get(fam, ())}
        res["cards"][name] = {"family": fam, "values": card["trained_scalars"]["values"], "judge": h,
                              "splits": splits,
                              "ablation": ablation(card, h),
                              "shipped_heldout": card.get("heldout"), "teaching": card.get("teaching_check"),
                              "iterations": card["trained_scalars"].get("iterations"),
                              "best_at_iteration": card.get("best_at_iteration"), "reproduce": card.get("reproduce")}
    return res


def ablation(card: dict, h: dict) -> dict:
    """Each learned scalar alone (the others at their start values) against the untrained start, paired, mean over
    budgets, on the judged comparison ``h``'s draws; "all learned" is that comparison's own row."""
    ts = card["trained_scalars"]
    fam = FAMILIES[ts["family"]]
    base = scalars.terms(fam, scalars.base_config(), h["seeds"]).mean(0)
    out = {}
    for i, p in enumerate(ts["params"]):
        theta = [t if j == i else scalars.SCALARS[q].start for j, (q, t) in enumerate(zip(ts["params"], ts["theta"]))]
        t = scalars.terms(fam, scalars.config_for(theta, ts["params"]), h["seeds"]).mean(0)
        out[f"{p} only"] = scalars.paired(t, base)
    out["all learned"] = h["mean_over_budgets"]["trained_vs_untrained"]
    return out


VARIANTS = (("standardised features (decades 0)", {"decades": 0.0}), ("decades 1", {"decades": 1.0}),
            ("decades 5", {"decades": 5.0}), ("n = 200, m = 1000", {"n": 200, "m": 1000}),
            ("n = 10, m = 50", {"n": 10, "m": 50}))


def beyond_the_family(seed: int = JUDGE_BASE + 777) -> dict:
    """qn_logistic on logistic regressions unlike its training family (other feature scales and sizes): card,
    untrained start and L-BFGS, mean over budgets, paired."""
    from lsr1_core.objectives.logistic import logistic_family

    path = Path(PRETRAINED_DIR) / "qn_logistic.json"
    if not path.exists():
        return {}
    ts = json.loads(path.read_text())["trained_scalars"]
    card = scalars.config_for(ts["theta"], ts["params"])
    fam = FAMILIES["logistic"]

    def score(method, obj, x0, fs):
        return scalars.problem_terms(method, obj, x0, fs, fam.budgets, fam.floor).mean(0)

    out = {}
    for label, kw in VARIANTS:
        obj, x0 = logistic_family(8, torch.Generator().manual_seed(seed), **kw)
        fs = obj.min_value()
        a, b, c = score(card, obj, x0, fs), score(scalars.base_config(), obj, x0, fs), score("lbfgs", obj, x0, fs)
        out[label] = {"card": scalars.paired(a, torch.zeros_like(a)), "untrained": scalars.paired(b, torch.zeros_like(b)),
                      "lbfgs": scalars.paired(c, torch.zeros_like(c)), "card_vs_untrained": scalars.paired(a, b),
                      "card_vs_lbfgs": scalars.paired(a, c)}
    return out


def _ci(c: dict) -> str:
    return f"{c['mean']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}]"


def targets(res: dict) -> dict:
    pays, beats_lbfgs, worse = [], [], []
    for name, c in res["cards"].items():
        h = c["judge"]
        best = min(h["rows"], key=lambda r: r["trained_vs_untrained"]["mean"])
        if best["trained_vs_untrained"]["mean"] <= -TARGET and best["trained_vs_untrained"]["hi"] < 0:
            pays.append(f"{c['family']} ({name}: {_ci(best['trained_vs_untrained'])} at {best['budget']} evaluations)")
        if h["mean_over_budgets"]["trained_vs_untrained"]["lo"] > 0:
            worse.append(name)
        lb = h["mean_over_budgets"]["trained_vs_lbfgs"]
        if lb["mean"] <= 0:
            sig = "" if lb["hi"] < 0 else "; the interval includes 0: a tie"
            beats_lbfgs.append(f"{c['family']} ({name}: {_ci(lb)} mean over budgets{sig})")
    return {"pays": pays, "beats_lbfgs": beats_lbfgs, "worse": worse}


NOT_SHIPPED = [
    ("quadratic_n2", "γ only (`--params gamma`, 40 ES iterations): held-out −1.00 [−1.73, −0.27] at 4 evaluations, "
     "−0.20 [−0.36, −0.05] over 3–8, but the learned γ factor (0.09) ends 2-D Rastrigin from its default start in "
     "another local minimum (f = 12.9 against the untrained default's 4.97), and an analytic card must solve the "
     "teaching functions at least as well: refused by the shipping rule. (Which Rastrigin minimum a run reaches "
     "is chaotic in γ: 0.1, 0.15 and 0.35 end higher, 0.25 and 0.5 do not.)"),
    ("digits_mlp", "a β sweep (0.5–2, γ ×¼–×4) found no gain over the untrained start (best −0.02 mean over "
     "16–128 evaluations): the network's coordinates do not carry per-feature scales a diagonal metric can undo."),
    ("rosenbrock_n100, lowrank_rosenbrock, quadratic_n2 (diag)", "the diagonal metric makes them worse (+0.09 to "
     "+3.06 mean over budgets for β = 0.5–2): their coordinates are exchangeable; ES keeps β near 0 there, so no "
     "card (nothing learned beats the start)."),
]


def markdown(res: dict, cmd: str, seconds: float) -> str:
    t = targets(res)
    L = ["# Where learning pays: learned qn scalars on held-out problems (issue 22)", "",
         "Generated by `" + cmd + "`; do not edit by hand. " + __doc__.split("\n\n")[2].replace("\n", " "), "",
         f"Machine: {machine()}. {seconds:.0f} s.", "",
         "**What is learned.** Not network weights: a few smooth family-level quantities of the qn form, by "
         "antithetic evolution strategies on the family's meta-loss in evaluations (`lsr1_core/meta/scalars.py`, "
         "`lsr1_core/meta/budget.py`): β, the exponent of a diagonal metric H₀ = γ·D, D_i = (v_i/mean v)^(−β/2) with "
         "v an average of g_i² (β = 0 is the untrained start, H₀ = γI), and the H₀ scale factor. The update stays "
         "the qn form's SR1/BFGS with its safeguard; the networks of these cards are untrained (zero output "
         "layers) and each card says so. The diagonal metric is a change of variables, so every guarantee of the "
         "qn form (H ≻ 0, Armijo, scale-free in f and in a uniform scaling of x, the restart rule) holds for any β.",
         "", "## Targets", "",
         f"- Families where a shipped card is ≥ {TARGET} below its untrained start at some budget, interval "
         f"excluding 0 (target: 3): **{len(t['pays'])}** — " + ("; ".join(t["pays"]) or "none") + ".",
         f"- Families where the card is at or below L-BFGS at equal evaluations, mean over budgets (target: 2): "
         f"**{len(t['beats_lbfgs'])}** — " + ("; ".join(t["beats_lbfgs"]) or "none") + ".",
         f"- Shipped cards worse than their untrained start: {', '.join(t['worse']) or 'none'}."]
    if res.get("run"):
        r = res["run"]
        if r.get("points"):
            L.append(f"- Scalar meta-training run of the `qn_scalars_logistic` preset (`{r['run']}`; make one with "
                     "`python -m lsr1_core.runs start --preset qn_scalars_logistic --wait`, 200 iterations): validation "
                     f"{r['iteration0']:.3f} at iteration 0, best {r['best']:.3f} at iteration {r['best_iteration']} "
                     f"(of {r['last_iteration']}), {r['best'] - r['iteration0']:+.3f}. The qn twin of the default "
                     "preset, `qn_quadratic` (N = 2 quadratics, iteration-counted log-gap over 16 steps), cannot gain "
                     "0.3 by construction: SR1 solves a 2-D quadratic at its second step, so only the first step's "
                     "term (about −0.5 of −7.5) can improve, and one gradient and one probe pair cannot fix a 2-D "
                     "Hessian — which is why the scalar presets train on families with headroom.")
    L += ["- Mesh recovery at 4 steps (≥ 3 % below the untrained start): not met — see the hmr card's rows at 4–8 "
          "evaluations below (no gain there; the gain is at 16–32).", ""]
    for name, c in res["cards"].items():
        h = c["judge"]
        L += [f"## {name} ({c['family']}: {FAMILIES[c['family']].title})", "",
              "Learned: " + ", ".join(f"{k} = {v:.4g}" for k, v in c["values"].items())
              + f" (ES, best of {c['iterations']} iterations at iteration {c['best_at_iteration']}). Reproduce: "
              f"`{c['reproduce']}`.", "",
              ("Clip-level test (clips no run saw), " if c["family"] in SPLITS else "")
              + f"judge seeds {h['seeds']} ({h['problems']} problems, none used in training, validation or shipping):",
              "", "| evaluations | card | untrained start | L-BFGS | card − untrained | card − L-BFGS |",
              "|---|---|---|---|---|---|"]
        for r in h["rows"] + [dict(h["mean_over_budgets"], budget="mean")]:
            L.append(f"| {r['budget']} | {_ci(r['trained'])} | {_ci(r['untrained'])} | {_ci(r['lbfgs'])} | "
                     f"{_ci(r['trained_vs_untrained'])} | {_ci(r['trained_vs_lbfgs'])} |")
        for sp, hs in (c.get("splits") or {}).items():
            L += ["", f"{FAMILIES[sp].title} — judge seeds {hs['seeds']} ({hs['problems']} problems):", "",
                  "| evaluations | card | untrained start | L-BFGS | card − untrained | card − L-BFGS |",
                  "|---|---|---|---|---|---|"]
            for r in hs["rows"] + [dict(hs["mean_over_budgets"], budget="mean")]:
                L.append(f"| {r['budget']} | {_ci(r['trained'])} | {_ci(r['untrained'])} | {_ci(r['lbfgs'])} | "
                         f"{_ci(r['trained_vs_untrained'])} | {_ci(r['trained_vs_lbfgs'])} |")
        ab = c.get("ablation")
        if ab:
            L += ["", "Ablation (judge draws, paired against the untrained start, mean over budgets): "
                  + "; ".join(f"{k}: {_ci(v)}" for k, v in ab.items()) + "."]
        sh = c.get("shipped_heldout")
        if sh:
            m = sh["mean_over_budgets"]
            L += ["", f"At shipping (held-out seeds {sh['seeds']}): card − untrained {_ci(m['trained_vs_untrained'])}, "
                      f"card − L-BFGS {_ci(m['trained_vs_lbfgs'])}, mean over budgets."]
        te = c.get("teaching")
        if te:
            bad = [f for f, r in te["functions"].items() if not r["ok"]]
            L += ["", f"2-D teaching functions from their default starts, {te['steps']} steps: "
                      + ("as well as the untrained default on all six." if not bad else
                         f"ends higher than the untrained default on {bad} (not an analytic family's card).")]
        L.append("")
    bt = res.get("beyond")
    if bt:
        L += ["## Beyond the family: qn_logistic on other logistic regressions", "",
              "Eight problems each (seed " + str(JUDGE_BASE + 777) + "; the raw problems, not rescaled); mean over "
              "16–128 evaluations. The learned metric transfers across sizes and across "
              "how badly the features are scaled, but **on standardised features it is worse than the untrained "
              "form**: there the coordinates are exchangeable and a diagonal metric only adds noise. Use it for "
              "models on unstandardised features; otherwise start from `qn_quadratic`.", "",
              "| problems | card | untrained start | L-BFGS | card − untrained | card − L-BFGS |", "|---|---|---|---|---|---|"]
        for label, r in bt.items():
            L.append(f"| {label} | {_ci(r['card'])} | {_ci(r['untrained'])} | {_ci(r['lbfgs'])} | "
                     f"{_ci(r['card_vs_untrained'])} | {_ci(r['card_vs_lbfgs'])} |")
        L.append("")
    L += ["## Tried and not shipped", ""]
    L += [f"- **{f}**: {why}" for f, why in NOT_SHIPPED]
    L += ["", "Cells: mean best log10 (f − f*)/(f₀ − f*) within the budget (lower is better; gaps below the family's "
              "floor count as the floor, −12 for the analytic and GLM families, −3 for mesh recovery whose f* is a "
              "reference fit); 95 % t-intervals; differences paired per problem.", ""]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.learning", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4, help="judge seeds per family (capped for mesh recovery)")
    ap.add_argument("--cards", default=None, help="comma-separated card names (default: every scalar card)")
    ap.add_argument("--run", default=None, help="a scalar meta-training run directory to summarise")
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    if not 1 <= a.seeds <= 50:
        ap.error("--seeds must be in [1, 50]")
    out = out_dir(ap, a.out)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    names = a.cards.split(",") if a.cards else None
    res = evaluate(names, a.seeds)
    if not res["cards"]:
        ap.error(f"no scalar cards{' named ' + a.cards if a.cards else ''} in {PRETRAINED_DIR}")
    if a.run:
        res["run"] = run_curve(Path(a.run))
    if not names or "qn_logistic" in names:
        res["beyond"] = beyond_the_family()
    secs = time.perf_counter() - t0
    cmd = command("learning", f"--seeds {a.seeds}" if a.seeds != 4 else "", f"--cards {a.cards}" if a.cards else "",
                  f"--run {a.run}" if a.run else "")
    write_report(out, "learning", res, markdown(res, cmd, secs), md_name="results_learned.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
