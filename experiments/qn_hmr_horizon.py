"""Where is the floor? Mesh recovery's 3-D error over long horizons, for the qn form, L-BFGS and Adam.

    python -m experiments.qn_hmr_horizon [--n-test 256] [--steps 100] [--gt-steps 30] [--out docs]

Issue 13 asks for the qn form's PA-MPJPE after 4 steps to lie 7 % below LGD's (100.6 mm on our test set, so
93.6 mm). This experiment asks what any optimizer of the mesh-recovery objective (Eq. 12: the L1 reprojection
error; no pose prior) can reach from the shared, frozen initializer when it is given many more steps: the qn
form (untrained: the shipped default rules), L-BFGS (m = 8, strong Wolfe) and Adam (lr 0.02, as in every HMR
table) run ``--steps`` steps on the held-out test set. Two more rows start the qn form and L-BFGS from the
ground-truth pose and shape: how far the objective itself (noisy, 20 % of the keypoints missing, depth
ambiguous) pulls a fit away from the truth. Writes docs/results/qn_hmr_horizon.json and
docs/results_qn_hmr_horizon.md.
"""
from __future__ import annotations

import argparse
import time

import torch

from lsr1_core.hmr import CameraConfig, load_pretrained, test_set
from lsr1_core.hmr.anny_body import AnnyBody
from lsr1_core.hmr.compare import step_metrics
from lsr1_core.hmr.models import HMRObjective
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.solvers import make_solver, run

from ._report import command, write_report

TARGET_MM = 93.6  # issue 13: 7 % below LGD's 100.6 mm at step 4 (docs/results_qn_hmr.md)


def _solvers():
    return {"lsr1_qn": lambda: LSR1Solver(model=LSR1Net(LSR1Config.qn())),
            "lbfgs": lambda: make_solver("lbfgs", memory=8, line_search="strong_wolfe"),
            "adam": lambda: make_solver("adam", lr=0.02)}


def _curve(body, batch, obj, xs, every) -> dict:
    P = body.pose_dim
    ks = sorted(set(range(0, len(xs), every)) | {len(xs) - 1} | {k for k in (1, 2, 4, 8, 15) if k < len(xs)})
    rows = {"step": [], "pa_mpjpe": [], "f": [], "reproj_px": []}
    for k in ks:
        m = step_metrics(body, batch, obj, xs[k][:, :P], xs[k][:, P:])
        rows["step"].append(k)
        rows["pa_mpjpe"].append(float(m["pa_mpjpe"].mean()))
        rows["f"].append(float(m["f"].mean()))
        rows["reproj_px"].append(float(m["reproj"].mean()))
    return rows


def evaluate(n_test: int = 256, steps: int = 100, gt_steps: int = 30, every: int = 5, log=print) -> dict:
    torch.set_num_threads(1)
    body = AnnyBody()
    init = load_pretrained(body)["lsr1"]
    batch = test_set(body, n=n_test)
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    with torch.no_grad(), init.inference(rows=len(batch)):
        z0 = torch.cat(init.initial(obj), 1).detach()
    zgt = torch.cat([batch.pose, batch.shape], 1).to(z0.dtype)
    out = {"n_test": n_test, "steps": steps, "gt_steps": gt_steps, "every": every, "target_mm": TARGET_MM, "runs": {}}
    plan = [(name, make, z0, steps) for name, make in _solvers().items()]
    plan += [(f"{name}_from_truth", _solvers()[name], zgt, gt_steps) for name in ("lsr1_qn", "lbfgs") if gt_steps > 0]
    for name, make, start, k in plan:
        t0 = time.perf_counter()
        with torch.no_grad():
            tr = run(make(), obj, start, k)
        xs = [tr.x[i] for i in range(tr.x.shape[0])]
        rec = _curve(body, batch, obj, xs, every)
        rec.update(seconds=time.perf_counter() - t0, evals=int(tr.evals.sum()), diverged=int(tr.diverged.sum()))
        out["runs"][name] = rec
        log(name, {k: (v[-1] if isinstance(v, list) else v) for k, v in rec.items()})
    return out


LABELS = {"lsr1_qn": "L-SR1 qn form (shipped defaults)", "lbfgs": "L-BFGS (m = 8, strong Wolfe)", "adam": "Adam (lr 0.02)",
          "lsr1_qn_from_truth": "qn form, started at the ground truth", "lbfgs_from_truth": "L-BFGS, started at the ground truth"}


def first_reach(rec: dict, level: float):
    for k, v in zip(rec["step"], rec["pa_mpjpe"]):
        if k > 0 and v <= level:
            return k
    return None


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(res: dict, cmd: str) -> str:
    target = res["target_mm"]
    lines = ["# Mesh recovery over long horizons: where the 3-D error floor lies", "", f"Command: `{cmd}`.", "",
             (__doc__ or "").split("\n\n")[2].replace("\n", " "), "",
             f"| method | PA-MPJPE step 0 | step 4 | step 15 | last step | best (step) | first step ≤ {target} mm | "
             "f step 15 | f last step | 2-D error last step (px) | evaluations | diverged |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in res["runs"].items():
        at = dict(zip(r["step"], r["pa_mpjpe"]))
        fat = dict(zip(r["step"], r["f"]))
        last = r["step"][-1]
        b = min(range(1, len(r["step"])), key=lambda i: r["pa_mpjpe"][i])
        reach = None if name.endswith("_from_truth") else first_reach(r, target)
        lines.append(f"| {LABELS.get(name, name)} | {at[0]:.1f} | {_fmt(at.get(4), '.1f')} | "
                     f"{_fmt(at.get(15), '.1f')} | {at[last]:.1f} (step {last}) | {r['pa_mpjpe'][b]:.1f} ({r['step'][b]}) | "
                     f"{_fmt(reach, 'd')} | {_fmt(fat.get(15), '.4f')} | {fat[last]:.4f} | "
                     f"{r['reproj_px'][-1]:.2f} | {r['evals']} | {r['diverged']} |")
    lines += ["", f"Curves (PA-MPJPE in mm; steps 1, 2, 4, 8, 15 and every {res['every']}):", ""]
    names = [n for n in res["runs"] if not n.endswith("_from_truth")]
    lines += ["| step | " + " | ".join(LABELS[n] for n in names) + " |", "|---:|" + "---:|" * len(names)]
    for i, k in enumerate(res["runs"][names[0]]["step"]):
        lines.append(f"| {k} | " + " | ".join(f"{res['runs'][n]['pa_mpjpe'][i]:.1f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("qn_hmr_horizon"), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--gt-steps", type=int, default=30)
    ap.add_argument("--every", type=int, default=5, help="record the metrics every this many steps")
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    if a.n_test < 1 or a.steps < 15 or a.gt_steps < 0 or a.every < 1:
        ap.error("--n-test and --every must be >= 1, --steps >= 15 and --gt-steps >= 0")
    res = evaluate(a.n_test, a.steps, a.gt_steps, a.every)
    write_report(a.out, "qn_hmr_horizon", res,
                 markdown(res, command("qn_hmr_horizon", f"--n-test {a.n_test} --steps {a.steps} --gt-steps {a.gt_steps}")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
