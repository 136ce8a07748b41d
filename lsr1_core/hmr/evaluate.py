"""Evaluation of HMR fitting methods: per-step MPJPE, PA-MPJPE (mm) and 2-D reprojection error.

Protocol (as 3DPW is evaluated, SPIN-style): the 14 joints of ``body.EVAL14`` (ankles, knees,
hips, wrists, elbows, shoulders, neck, head); MPJPE after centring both skeletons on the pelvis
(mid-hips); PA-MPJPE after a similarity Procrustes alignment; both in millimetres. The 2-D error
is the mean distance over the observed-visible joints, in pixels of the virtual image, between
the prediction (normalised, then mapped into the observation's box) and the observation.
"""
from __future__ import annotations

import torch

from .body import COCO18, EVAL14, BodyModel
from .data import CameraConfig, HMRBatch, to_camera
from .models import FitResult, HMRModel, HMRObjective, classical_fit

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
    from .metrics import mpjpe, pa_mpjpe
    with torch.no_grad():
        kp3d = body.keypoints(pose, shape)
        X = to_camera(kp3d, camera)
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


def run_methods(body: BodyModel, batch: HMRBatch, models: dict[str, HMRModel], steps: int,
                classical: tuple[str, ...] = ("adam", "lbfgs"), init_model: str | None = None,
                classical_kwargs: dict | None = None) -> dict[str, FitResult]:
    """Fit ``batch`` with each learned model and each classical method; the classical ones start
    from ``init_model``'s initializer (default: the first model). Returns FitResults by name."""
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    out: dict[str, FitResult] = {}
    for name, m in models.items():
        with torch.no_grad(), m.inference(rows=len(batch)):
            r = m.fit(obj, steps)
        out[name] = FitResult([p.detach() for p in r.poses], [s.detach() for s in r.shapes],
                              [f.detach() for f in r.f])
    if classical and models:
        start = models[init_model or next(iter(models))]
        with torch.no_grad(), start.inference(rows=len(batch)):
            p0, s0 = start.initial(obj)
        for c in classical:
            out[c] = classical_fit(c, obj, p0, s0, steps, **(classical_kwargs or {}).get(c, {}))
    return out
