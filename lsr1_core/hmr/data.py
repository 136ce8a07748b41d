"""Training samples and the fixed test set, generated LGD-style from the body model.

A sample is a body (pose θ, shape β) seen by a fixed pinhole camera: θ's root rotation is the
mocap's (heading removed) composed with a random global rotation (yaw uniform in [0, 360°),
pitch and roll within ±20°, as LGD draws it); the body's root sits ``distance`` metres in front of
the camera. The observation is the COCO-18 keypoints projected into a virtual
``image_size``² image, each dropped (confidence 0) with probability ``drop_prob``, optionally with
detector-like Gaussian noise (σ as a fraction of the body's 2-D bounding box).

The fitting methods never see pixels: like LGD they see the visible keypoints normalised by
their bounding box (centre 0.5, longest side 1; missing joints at 0.5), and they compare their
own normalised projection with it. ``normalise_keypoints`` does both.

Splits: training poses come from the training mocap clips, widened by the joint-limit prior
(Gaussian perturbation of every joint's axis-angle, clamped to the box the mocap spans plus a
margin); the test set is built from held-out clips only (``mocap.TEST_CLIPS``) with a fixed seed
and is our stand-in for 3DPW; a validation set uses the training clips with its own seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .body import BodyModel, BodyModelError
from .formats import load_amass_npz
from .mocap import joint_limit_box, mocap_poses

# Default world → camera rotation: Anny's world (x left, y back, z up) → camera (x right in the
# image, y down, z forward); each body model states its own (BodyModel.world_to_camera).
_R_WC = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class CameraConfig:
    focal: float = 600.0
    distance: float = 6.0
    image_size: int = 256

    def to_dict(self) -> dict:
        return {"focal": self.focal, "distance": self.distance, "image_size": self.image_size}


@dataclass
class HMRBatch:
    """One batch of observations and their ground truth (all float32 tensors on one device)."""
    kp2d: torch.Tensor  # (B, 18, 2) observed keypoints in pixels (missing ones are 0)
    conf: torch.Tensor  # (B, 18) confidences; 0 = missing
    pose: torch.Tensor  # (B, P) ground-truth pose
    shape: torch.Tensor  # (B, S) ground-truth shape
    joints3d: torch.Tensor  # (B, 18, 3) ground-truth keypoints, camera coordinates (metres)

    def to(self, device) -> "HMRBatch":
        return HMRBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def subset(self, idx) -> "HMRBatch":
        return HMRBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def __len__(self) -> int:
        return self.kp2d.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name).contiguous() for f in fields(self)}


def check_observation(kp2d: torch.Tensor, conf: torch.Tensor, n_keypoints: int = 18) -> None:
    """Clear errors for what a user can hand the fitters: shapes, NaN, nothing visible."""
    if not isinstance(kp2d, torch.Tensor) or kp2d.ndim != 3 or kp2d.shape[1:] != (n_keypoints, 2):
        got = tuple(kp2d.shape) if isinstance(kp2d, torch.Tensor) else type(kp2d).__name__
        raise BodyModelError(f"2-D keypoints must be a (B, {n_keypoints}, 2) tensor (OpenPose COCO-18 order), got {got}")
    if not isinstance(conf, torch.Tensor) or conf.shape != kp2d.shape[:2]:
        got = tuple(conf.shape) if isinstance(conf, torch.Tensor) else type(conf).__name__
        raise BodyModelError(f"confidences must be a (B, {n_keypoints}) tensor matching the keypoints, got {got}")
    vis = conf > 0
    bad = ~torch.isfinite(kp2d).all(-1) & vis
    if bad.any():
        b, j = bad.nonzero()[0].tolist()
        raise BodyModelError(f"keypoint {j} of sample {b} is NaN/inf but has confidence > 0; "
                             "give missing joints confidence 0")
    if not torch.isfinite(conf).all() or (conf < 0).any():
        raise BodyModelError("confidences must be finite and >= 0")
    few = vis.sum(1) < 2
    if few.any():
        b = int(few.nonzero()[0])
        raise BodyModelError(f"sample {b} has fewer than 2 keypoints with confidence > 0 "
                             f"({int(vis[b].sum())}); there is nothing to fit")


def normalise_keypoints(kp2d: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """LGD's normalisation: the visible joints' bounding box is centred at 0.5 with its longest
    side 1; joints with confidence 0 are set to 0.5. Differentiable in ``kp2d``."""
    vis = (conf > 0).unsqueeze(-1)
    big = torch.finfo(kp2d.dtype).max
    x = torch.where(vis, kp2d, torch.zeros_like(kp2d))
    lo = torch.where(vis, kp2d, torch.full_like(kp2d, big)).amin(1, keepdim=True)
    hi = torch.where(vis, kp2d, torch.full_like(kp2d, -big)).amax(1, keepdim=True)
    size = (hi - lo).amax(-1, keepdim=True).clamp_min(1e-6)
    centre = 0.5 * (lo + hi)
    out = (x - centre) / size + 0.5
    return torch.where(vis, out, torch.full_like(out, 0.5))


def project(joints_cam: torch.Tensor, camera: CameraConfig) -> torch.Tensor:
    z = joints_cam[..., 2:3].clamp_min(1e-3)
    return camera.focal * joints_cam[..., :2] / z + camera.image_size / 2


def to_camera(kp_world: torch.Tensor, camera: CameraConfig, body: BodyModel | None = None) -> torch.Tensor:
    """World → camera coordinates: the body model's rotation, then ``camera.distance`` forward."""
    R = (_R_WC if body is None else torch.tensor(body.world_to_camera)).to(kp_world)
    out = kp_world @ R.T
    return out + torch.tensor([0.0, 0.0, camera.distance], dtype=kp_world.dtype, device=kp_world.device)


def _rot(axis: int, ang: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(ang), torch.sin(ang)
    o, z = torch.ones_like(ang), torch.zeros_like(ang)
    if axis == 0:
        m = [o, z, z, z, c, -s, z, s, c]
    elif axis == 1:
        m = [c, z, s, z, o, z, -s, z, c]
    else:
        m = [c, -s, z, s, c, z, z, z, o]
    return torch.stack(m, -1).reshape(ang.shape + (3, 3))


def random_global_rotation(pose: torch.Tensor, gen: torch.Generator, up_axis: int = 2) -> torch.Tensor:
    """Compose the root rotation with a random yaw about the up axis (uniform) and tilts within
    ±20° about the other two axes (LGD's ranges)."""
    import roma  # optional (HMR extras): loaded when a rotation is converted
    B = pose.shape[0]
    yaw = torch.rand(B, generator=gen) * 2 * math.pi
    pitch = (torch.rand(B, generator=gen) * 2 - 1) * math.radians(20)
    roll = (torch.rand(B, generator=gen) * 2 - 1) * math.radians(20)
    a, b = [ax for ax in range(3) if ax != up_axis]
    R = _rot(up_axis, yaw) @ _rot(a, pitch) @ _rot(b, roll)
    root = roma.rotvec_to_rotmat(pose[:, :3].double())
    out = pose.clone()
    out[:, :3] = roma.rotmat_to_rotvec(R.double() @ root).to(pose.dtype)
    return out


@dataclass(frozen=True)
class SampleConfig:
    drop_prob: float = 0.2
    noise: float = 0.0  # 2-D noise σ as a fraction of the body's 2-D bounding-box size
    pose_jitter: float = 0.1  # radians, σ of the joint-limit prior's perturbation (training only)
    min_visible: int = 6


def make_batch(body: BodyModel, poses: torch.Tensor, shapes: torch.Tensor, gen: torch.Generator,
               camera: CameraConfig = CameraConfig(), sample: SampleConfig = SampleConfig()) -> HMRBatch:
    """Observations of the given bodies (poses are rotated by a random global rotation here)."""
    with torch.no_grad():
        B = poses.shape[0]
        poses = random_global_rotation(poses, gen, body.up_axis)
        kp = to_camera(body.keypoints(poses, shapes).float(), camera, body)
        uv = project(kp, camera)
        conf = (torch.rand(B, uv.shape[1], generator=gen) >= sample.drop_prob).float()
        # keep at least min_visible joints per sample: re-enable random dropped ones
        for b in (conf.sum(1) < sample.min_visible).nonzero().flatten().tolist():
            order = torch.randperm(uv.shape[1], generator=gen)
            conf[b, order[:sample.min_visible]] = 1.0
        if sample.noise > 0:
            size = (uv.amax(1) - uv.amin(1)).amax(-1)  # (B,)
            uv = uv + torch.randn(uv.shape, generator=gen) * (sample.noise * size)[:, None, None]
        uv = uv * conf.unsqueeze(-1)
        return HMRBatch(kp2d=uv, conf=conf, pose=poses.float(), shape=shapes.float(), joints3d=kp)


class PoseSampler:
    """Training (or validation) bodies: mocap frames of the given split, widened by the
    joint-limit prior, with shapes uniform over the phenotype box."""

    def __init__(self, body: BodyModel, split: str = "train", jitter: float = 0.1, data_fraction: float = 1.0,
                 seed: int = 0, poses: np.ndarray | None = None):
        """``poses`` (T, pose_dim) replaces the shipped mocap (e.g. AMASS poses for SMPL); the
        joint-limit box is then the range those poses span, widened by 15°."""
        if poses is None:
            if body.name != "anny":
                raise BodyModelError(f"the shipped mocap poses are for the Anny rig; for body model {body.name!r} "
                                     "give your own poses (e.g. AMASS files with --amass)")
            poses, _ = mocap_poses(split)
            lo, hi = joint_limit_box()
        else:
            poses = np.asarray(poses, dtype=np.float32)
            if poses.ndim != 2 or poses.shape[1] != body.pose_dim:
                raise BodyModelError(f"poses must be (T, {body.pose_dim}) for body model {body.name!r}, "
                                     f"got {poses.shape}")
            m = np.deg2rad(15.0)
            lo, hi = poses[:, 3:].min(0) - m, poses[:, 3:].max(0) + m
        if not 0 < data_fraction <= 1:
            raise ValueError(f"data_fraction must lie in (0, 1], got {data_fraction}")
        if data_fraction < 1:
            g = np.random.default_rng(seed)
            keep = np.sort(g.choice(len(poses), max(1, int(round(data_fraction * len(poses)))), replace=False))
            poses = poses[keep]
        self.poses = torch.from_numpy(np.ascontiguousarray(poses))
        self.lo, self.hi = torch.from_numpy(lo), torch.from_numpy(hi)
        self.jitter = jitter
        self.body = body

    def __len__(self) -> int:
        return len(self.poses)

    def draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.poses), (n,), generator=gen)
        pose = self.poses[idx].clone()
        if self.jitter > 0:
            body = pose[:, 3:] + self.jitter * torch.randn(n, pose.shape[1] - 3, generator=gen)
            pose[:, 3:] = torch.maximum(torch.minimum(body, self.hi), self.lo)
        shape = self.body.sample_shape(n, gen)
        return pose, shape


def amass_poses(paths, every: int = 1) -> np.ndarray:
    """SMPL poses (T, 72) from AMASS motion files or folders of them, for ``PoseSampler(poses=…)``.

    AMASS stores root orientations in a z-up world; SMPL's own frame (and the pipeline's, for the
    SMPL body) is y-up, so each root is turned by −90° about x and its heading removed (the random
    global rotation of each sample supplies the heading)."""
    import roma  # optional (HMR extras): loaded when a rotation is converted
    files = []
    for p in ([paths] if isinstance(paths, (str, Path)) else paths):
        p = Path(p)
        files += sorted(p.rglob("*.npz")) if p.is_dir() else [p]
    if not files:
        raise BodyModelError(f"no AMASS .npz files found in {paths}")
    poses = np.concatenate([load_amass_npz(f)["poses"][::every] for f in files]).astype(np.float64)
    R = roma.rotvec_to_rotmat(torch.from_numpy(poses[:, :3]))
    fix = _rot(0, torch.tensor(-math.pi / 2, dtype=torch.float64))
    R = fix @ R
    fwd = R[:, :, 2]  # the body's forward axis (+z in SMPL's canonical frame)
    yaw = torch.atan2(fwd[:, 0], fwd[:, 2])
    R = _rot(1, -yaw) @ R
    poses[:, :3] = roma.rotmat_to_rotvec(R).numpy()
    return poses.astype(np.float32)


def test_set(body: BodyModel, n: int = 256, seed: int = 2024, noise: float = 0.01,
             camera: CameraConfig = CameraConfig()) -> HMRBatch:
    """The fixed test set: ``n`` frames of the held-out clips (no pose jitter: real poses),
    random shapes and global rotations, 20% of joints missing, 2-D noise σ = 1% of the box."""
    poses, _ = mocap_poses("test")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(poses), generator=gen)[:n] if n <= len(poses) else \
        torch.randint(len(poses), (n,), generator=gen)
    pose = torch.from_numpy(poses)[idx]
    shape = body.sample_shape(len(idx), gen)
    return make_batch(body, pose, shape, gen, camera, SampleConfig(noise=noise))


def validation_set(body: BodyModel, n: int = 128, seed: int = 7, noise: float = 0.01,
                   camera: CameraConfig = CameraConfig(), poses: np.ndarray | None = None) -> HMRBatch:
    """Validation: training clips (or the given poses), no jitter, its own seed, the test set's
    noise and drop rate."""
    sampler = PoseSampler(body, "train", jitter=0.0, poses=poses)
    gen = torch.Generator().manual_seed(seed)
    pose, shape = sampler.draw(n, gen)
    return make_batch(body, pose, shape, gen, camera, SampleConfig(noise=noise))
