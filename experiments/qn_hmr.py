"""Human mesh recovery with the scale-free L-SR1 form beside LGD, the paper-form L-SR1, Adam and L-BFGS.

    python -m experiments.qn_hmr [--n-test 256] [--steps 15] [--model pretrained/qn_quadratic]

Every method starts from the shipped models' shared, frozen initializer on the held-out test set (the same
setting as docs/results_hmr.md). The qn form runs on z = [θ, β] as one vector (the body-model objective is an
:class:`~lsr1_core.objectives.Objective`), with the given checkpoint or, with ``--model untrained``, the
untrained qn model (positive semi-definite SR1 with the safeguard). Writes docs/results/qn_hmr.json and
docs/results_qn_hmr.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lsr1_core.hmr import CameraConfig, load_pretrained, test_set
from lsr1_core.hmr.anny_body import AnnyBody
from lsr1_core.hmr.compare import CLASSICAL, curves_of, fit_methods, step_metrics
from lsr1_core.hmr.models import FitResult, HMRObjective, load_hmr_model
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.solvers import run

from ._report import command, write_report


def qn_fit(solver, obj, pose0, shape0, steps):
    z0 = torch.cat([pose0, shape0], 1).detach()
    t0 = time.perf_counter()
    with torch.no_grad():
        tr = run(solver, obj, z0, steps)
    wall = time.perf_counter() - t0
    P = obj.body.pose_dim
    xs = [tr.x[k] for k in range(tr.x.shape[0])]
    return FitResult([x[:, :P] for x in xs], [x[:, P:] for x in xs], [tr.f[k] for k in range(tr.f.shape[0])]), tr, wall


def evaluate(n_test=256, steps=15, model="pretrained/qn_quadratic", hmr_models=()):
    """``hmr_models``: HMR checkpoints of the qn form (meta-trained on HMR), evaluated as rows
    ``lsr1_qn_hmr`` (with the secant term) and ``lsr1_qn_hmr_nosec`` (trained with λ_sec = 0, from its card)."""
    body = AnnyBody()
    models = load_pretrained(body)
    for path in hmr_models:
        m, card = load_hmr_model(path, body)
        if not m.is_qn:
            raise SystemExit(f"{path} is not an HMR model of the qn form")
        nosec = float(card.get("train_config", {}).get("secant_weight", 1.0)) == 0.0
        models["lsr1_qn_hmr_nosec" if nosec else "lsr1_qn_hmr"] = m
    batch = test_set(body, n=n_test)
    fitted = fit_methods(body, batch, models, steps, results=True)["results"]  # from L-SR1's initializer
    fits = {name: fitted[name] for name in [*models, *CLASSICAL]}  # the report's order: learned, then classical
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    with torch.no_grad(), models["lsr1"].inference(rows=len(batch)):
        p0, s0 = models["lsr1"].initial(obj)
    if model == "untrained" or not Path(str(model) + ".json").exists():
        solver, model = LSR1Solver(model=LSR1Net(LSR1Config.qn())), "untrained"
    else:
        solver = LSR1Solver(checkpoint=model)
    fits["lsr1_qn"], tr, wall = qn_fit(solver, obj, p0, s0, steps)
    curves = {name: curves_of(body, batch, obj, r) for name, r in fits.items()}
    per = {name: {k: step_metrics(body, batch, obj, r.poses[k], r.shapes[k])["pa_mpjpe"] for k in (4, steps)}
           for name, r in fits.items()}
    pairs = {}
    for mine in [n for n in per if n.startswith("lsr1_qn")]:
        for other in ("lgd", "lsr1", "adam", "lbfgs"):
            for k in (4, steps):
                d = per[mine][k] - per[other][k]
                pairs[f"{mine}-{other}@{k}"] = {"mean": float(d.mean()), "ci95": float(1.96 * d.std() / len(d) ** 0.5),
                                                "relative": float(d.mean() / per[other][k].mean())}
    return {"n_test": n_test, "steps": steps, "model": str(model), "curves": curves, "paired": pairs,
            "qn_evals": int(tr.evals.sum()), "qn_ms_per_step": 1000 * wall / steps,
            "qn_safeguard": float(tr.extras["safeguard"].mean()), "qn_diverged": int(tr.diverged.sum())}


LABELS = {"lgd": "LGD", "lsr1": "L-SR1 paper form", "lsr1_nosec": "L-SR1 paper form, no secant", "adam": "Adam",
          "lbfgs": "L-BFGS", "lsr1_qn": "L-SR1 qn form (not trained on HMR)",
          "lsr1_qn_hmr": "L-SR1 qn form, meta-trained on HMR", "lsr1_qn_hmr_nosec": "L-SR1 qn form, meta-trained on HMR, no secant"}


def markdown(res: dict, cmd: str) -> str:
    steps = res["steps"]
    lines = ["# Human mesh recovery with the scale-free L-SR1 form", "",
             f"Command: `{cmd}`. Test set: {res['n_test']} held-out samples; every method starts from the shared "
             f"initializer. qn model: `{res['model']}`; {res['qn_evals']} objective evaluations over {steps} steps "
             f"(the probe and backtracking included), safeguard fired on {100 * res['qn_safeguard']:.0f} % of "
             f"steps, {res['qn_diverged']} diverged, {res['qn_ms_per_step']:.0f} ms per step (batch {res['n_test']}, "
             "2-core CPU).", "",
             "| method | PA-MPJPE step 0 | step 4 | step 8 | step " + str(steps) + " | best (step) | MPJPE step 4 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, c in res["curves"].items():
        pa = c["pa_mpjpe"]
        b = min(range(1, len(pa)), key=lambda k: pa[k])
        lines.append(f"| {LABELS.get(name, name)} | {pa[0]:.1f} | {pa[4]:.1f} | {pa[min(8, steps)]:.1f} | "
                     f"{pa[steps]:.1f} | {pa[b]:.1f} ({b}) | {c['mpjpe'][4]:.1f} |")
    lines += ["", "Paired differences in PA-MPJPE (mm, the qn row minus the other; mean ± 95 % interval; relative to the other):", "",
              "| pair | difference | relative |", "|---|---:|---:|"]
    for k, v in res["paired"].items():
        lines.append(f"| {k} | {v['mean']:+.1f} ± {v['ci95']:.1f} | {100 * v['relative']:+.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("qn_hmr"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--model", default="pretrained/qn_quadratic",
                    help="a qn checkpoint (path without suffix) or 'untrained'")
    ap.add_argument("--hmr-model", nargs="*", default=[],
                    help="HMR checkpoints of the qn form (e.g. pretrained/hmr_lsr1_qn pretrained/hmr_lsr1_qn_nosec)")
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    if a.n_test < 1 or a.steps < 4:
        ap.error("--n-test must be >= 1 and --steps >= 4")
    res = evaluate(a.n_test, a.steps, a.model, a.hmr_model)
    cmd = command("qn_hmr", f"--n-test {a.n_test} --steps {a.steps} --model {a.model}",
                  "--hmr-model " + " ".join(a.hmr_model) if a.hmr_model else "")
    write_report(a.out, "qn_hmr", res, markdown(res, cmd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
