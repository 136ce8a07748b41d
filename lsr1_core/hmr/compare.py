"""Fit observations with every chosen method from one start and summarise the fits step by step: the Human
mesh recovery page's sample view and the reports (:func:`fit_methods`, the one fitting entry point) and the
page's test-set evaluation (:func:`evaluate_steps`).

    from lsr1_core.hmr import AnnyBody, load_pretrained, test_set
    from lsr1_core.hmr.compare import evaluate_steps
    body = AnnyBody()
    ev = evaluate_steps(body, test_set(body).subset(slice(0, 32)), load_pretrained(body), steps=15)
    ev["stats"]["lsr1"]["pa_mpjpe"]["median"]   # (16,) mm, steps 0…15
    ev["seconds_per_step"]["lgd"]             # wall time of one inner step for the whole batch

Everything returned is numpy or plain Python (it is cached and plotted by the app), except the torch
``FitResult``s that ``fit_methods(..., results=True)`` adds for the reports.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from .body import COCO18, EVAL14, BodyModel
from .data import CameraConfig, HMRBatch, to_camera
from .metrics import mpjpe, pa_mpjpe
from .models import FitResult, HMRModel, HMRObjective, classical_fit

# one name per method everywhere (this report, the app's page and figures, exports)
LABELS = {"lgd": "LGD", "lsr1": "L-SR1", "lsr1_nosec": "L-SR1 (no secant)", "adam": "Adam", "lbfgs": "L-BFGS",
          "gt": "Ground truth", "lgd_joint": "LGD, initializer trained jointly",
          "lsr1_joint": "L-SR1, initializer trained jointly", "lsr1_qn": "L-SR1 qn form"}


HIPS = (COCO18.index("right_hip"), COCO18.index("left_hip"))


def _box_size(kp2d: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    vis = (conf > 0).unsqueeze(-1)
    big = 1e30
    lo = torch.where(vis, kp2d, torch.full_like(kp2d, big)).amin(1)
    hi = torch.where(vis, kp2d, torch.full_like(kp2d, -big)).amax(1)
    return (hi - lo).amax(-1)


def step_metrics(body: BodyModel, batch: HMRBatch, obj: HMRObjective, pose: torch.Tensor, shape: torch.Tensor,
                 camera: CameraConfig = CameraConfig()) -> dict[str, torch.Tensor]:
    """Per-sample metrics (B,) of one estimate."""
    with torch.no_grad():
        kp3d = body.keypoints(pose, shape)
        X = to_camera(kp3d, camera, body)
        ev = list(EVAL14)
        pred, gt = X[:, ev], batch.joints3d[:, ev]
        hips = tuple(ev.index(h) for h in HIPS)
        x2d = obj.predict2d(pose, shape, kp3d)
        d2 = (x2d - obj.target).norm(dim=-1)
        vis = (batch.conf > 0).float()
        reproj = (d2 * vis).sum(1) / vis.sum(1) * _box_size(batch.kp2d, batch.conf)
        return {"mpjpe": 1000 * mpjpe(pred, gt, root=hips), "pa_mpjpe": 1000 * pa_mpjpe(pred, gt), "reproj": reproj,
                "f": obj.value_pose_shape(pose, shape)}


def curves_of(body: BodyModel, batch: HMRBatch, obj: HMRObjective, res: FitResult) -> dict[str, list[float]]:
    per = [step_metrics(body, batch, obj, p, s) for p, s in zip(res.poses, res.shapes)]
    return {k: [float(m[k].mean()) for m in per] for k in per[0]}


def evaluate_model(model: HMRModel, body: BodyModel, batch: HMRBatch, steps: int) -> dict[str, list[float]]:
    """Mean metrics at steps 0…steps of a learned method on ``batch``."""
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    with torch.no_grad(), model.inference(rows=len(batch)):
        res = model.fit(obj, steps)
    return curves_of(body, batch, obj, res)


ORDER = ("lsr1", "lgd", "lsr1_nosec", "adam", "lbfgs", "lsr1_qn")
LEARNED = {"lsr1": "lsr1", "lgd": "lgd", "lsr1_nosec": "lsr1"}  # learned slot → the checkpoint's method
CLASSICAL = ("adam", "lbfgs")
# fits from the shared initializer that need no HMR checkpoint: the classical ones and the untrained qn form
FITTERS = CLASSICAL + ("lsr1_qn",)
METRICS = (("reproj", "2-D reprojection error (px)"), ("mpjpe", "MPJPE (mm)"), ("pa_mpjpe", "PA-MPJPE (mm)"))


def fit_methods(body: BodyModel, batch: HMRBatch, models: dict[str, HMRModel], steps: int,
                classical: tuple[str, ...] = CLASSICAL, progress: Callable[[int, int, str], None] | None = None,
                *, results: bool = False) -> dict:
    """Fit ``batch`` with each learned model (by slot) and each classical method: the one fitting entry point of
    the page, its evaluation and the reports. The classical methods start from L-SR1's initializer when it is
    chosen, else the first model's, else from the rest pose. Returns numpy ``poses[name]`` (steps + 1, B, P),
    ``shapes[name]`` (steps + 1, B, S), ``metrics[name][metric]`` (steps + 1, B) for reproj/mpjpe/pa_mpjpe/f,
    ``seconds[name]`` (wall time of the fit), ``start`` (the slot whose initializer the classical methods used,
    or None) and ``order`` (the methods fitted); with ``results`` also ``results[name]``, each method's
    :class:`FitResult` (torch tensors, detached), for per-sample metrics of one's own."""
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    names = [n for n in ORDER if n in models] + [n for n in models if n not in ORDER]
    todo = names + list(classical)
    fits, seconds = {}, {}

    def tick(i, name):
        if progress:
            progress(i, len(todo), name)

    for i, name in enumerate(names):
        tick(i, name)
        t0 = time.perf_counter()
        with torch.no_grad(), models[name].inference(rows=len(batch)):
            r = models[name].fit(obj, steps)
        fits[name] = FitResult([p.detach() for p in r.poses], [s.detach() for s in r.shapes],
                               [f.detach() for f in r.f])
        seconds[name] = time.perf_counter() - t0
    start = ("lsr1" if "lsr1" in models else names[0]) if names else None
    if classical:
        with torch.no_grad():
            if start:
                with models[start].inference(rows=len(batch)):
                    pose0, shape0 = models[start].initial(obj)
            else:
                pose0, shape0 = torch.zeros(len(batch), body.pose_dim), body.default_shape(len(batch)).float()
    for j, c in enumerate(classical):
        tick(len(names) + j, c)
        t0 = time.perf_counter()
        fits[c] = classical_fit(c, obj, pose0, shape0, steps)
        seconds[c] = time.perf_counter() - t0
    tick(len(todo), "")
    out = {"poses": {}, "shapes": {}, "metrics": {}, "seconds": seconds, "start": start if classical else None,
           "order": [n for n in todo if n in fits]}
    # every step of a method in one call: the batch repeated once per step (far faster than step by step)
    K = steps + 1
    rep = batch.subset(torch.arange(len(batch)).repeat(K))
    rep_obj = HMRObjective(body, rep.kp2d, rep.conf, CameraConfig())
    for name in out["order"]:
        r = fits[name]
        P, S = torch.stack(r.poses), torch.stack(r.shapes)  # (K, B, ·)
        out["poses"][name], out["shapes"][name] = P.float().numpy(), S.float().numpy()
        m = step_metrics(body, rep, rep_obj, P.reshape(K * len(batch), -1), S.reshape(K * len(batch), -1))
        out["metrics"][name] = {k: v.reshape(K, len(batch)).float().numpy() for k, v in m.items()}
    if results:
        out["results"] = {name: fits[name] for name in out["order"]}
    return out


def curves(fit: dict) -> dict[str, dict[str, list[float]]]:
    """Per-step means over the batch (what :func:`curves_of` gives): name → metric → list."""
    return {n: {k: [float(v) for v in a.mean(1)] for k, a in m.items()} for n, m in fit["metrics"].items()}


def step_statistics(values: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, median and spread (quartiles, 10th/90th percentiles) over the samples of (steps + 1, B) values."""
    q = np.percentile(values, [10, 25, 50, 75, 90], axis=1)
    return {"mean": values.mean(1), "median": q[2], "q25": q[1], "q75": q[3], "p10": q[0], "p90": q[4],
            "std": values.std(1)}


def evaluate_steps(body: BodyModel, batch: HMRBatch, models: dict[str, HMRModel], steps: int,
                   classical: tuple[str, ...] = CLASSICAL, progress: Callable[[int, int, str], None] | None = None
                   ) -> dict:
    """Per-step statistics of MPJPE, PA-MPJPE and 2-D error for each method over ``batch``: ``stats[name]
    [metric]`` (see :func:`step_statistics`), ``seconds_per_step[name]`` (the fit's wall time over ``steps``,
    for the whole batch, the initializer included), ``n`` samples and ``steps``."""
    fit = fit_methods(body, batch, models, steps, classical, progress)
    stats = {n: {k: step_statistics(v) for k, v in m.items()} for n, m in fit["metrics"].items()}
    return {"stats": stats, "seconds_per_step": {n: s / max(steps, 1) for n, s in fit["seconds"].items()},
            "n": len(batch), "steps": steps, "start": fit["start"], "order": fit["order"]}


def camera_vertices(body: BodyModel, poses: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Camera-coordinate float32 vertices (B, V, 3) of B bodies (one batched skinning call)."""
    with torch.no_grad():
        v = body.vertices(torch.as_tensor(poses), torch.as_tensor(shapes)).float()
        return to_camera(v, CameraConfig(), body).numpy().astype(np.float32)
