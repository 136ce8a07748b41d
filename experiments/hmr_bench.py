"""HMR speed on this machine: body-model keypoints (fast path vs full mesh) and one inner step of
each fitting method, at batch 128.

    python -m experiments.hmr_bench [--threads 2]

Prints a markdown table (copied into docs/benchmarks.md). Run it on a quiet machine: on 2 cores
any other process distorts the numbers several-fold.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from lsr1_core.hmr.anny_body import AnnyBody, _load_anny
from lsr1_core.hmr.data import CameraConfig, PoseSampler, make_batch
from lsr1_core.hmr.models import HMRModel, HMRModelConfig, HMRObjective

from ._report import command


def _ms(fn, repeats: int = 7) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("hmr_bench"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    B = a.batch
    body = AnnyBody()
    model, reg = _load_anny()
    g = torch.Generator().manual_seed(0)
    pose, shape = PoseSampler(body, "train").draw(B, g)
    rows = []

    def fast_fwd():
        with torch.no_grad():
            body.keypoints(pose, shape)

    def fast_bwd():
        p = pose.clone().requires_grad_(True)
        body.keypoints(p, shape).sum().backward()

    def full_fwd():
        with torch.no_grad():
            reg({"vertices": body.vertices(pose, shape).double()})

    def full_bwd():
        p = pose.clone().requires_grad_(True)
        reg({"vertices": body.vertices(p, shape).double()}).sum().backward()

    rows.append(("keypoints, fast path (forward)", _ms(fast_fwd)))
    rows.append(("keypoints, fast path (forward + backward)", _ms(fast_bwd)))
    rows.append(("keypoints through the full 13 718-vertex mesh (forward)", _ms(full_fwd, 3)))
    rows.append(("keypoints through the full mesh (forward + backward)", _ms(full_bwd, 3)))
    batch = make_batch(body, pose, shape, g)
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    rows.append(("inner objective f and ∇f (Eq. 12)", _ms(lambda: obj.value_and_grads(pose, shape))))
    for method in ("lgd", "lsr1"):
        m = HMRModel(body.signature(), HMRModelConfig(method=method))

        def step(k, m=m):
            with torch.no_grad(), m.inference(rows=B):
                m.fit(obj, k)
        t0, t4 = _ms(lambda: step(0), 3), _ms(lambda: step(4), 3)
        rows.append((f"one inner step, {method.upper()} (inference, no meta-gradient)", (t4 - t0) / 4))
    print(f"Batch {B}, torch threads {torch.get_num_threads()}:\n")
    print("| operation | ms |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
