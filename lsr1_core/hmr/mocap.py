"""Real motion-capture poses for training and testing, retargeted onto the Anny rig.

Source: the 15 DeepMimic humanoid clips that the ``pybullet`` wheel ships
(``pybullet_data/data/motions/humanoid3d_*.txt``, zlib licence): walking, running, jumping,
kicks, punches, dances, a cartwheel, a backflip, spins, a roll, crawling and two get-ups;
1 620 frames in all. Each frame is 44 numbers: dt, root position (y up), root quaternion, then
chest, neck, right hip, right knee (1 angle), right ankle, right shoulder, right elbow (1), left
hip, left knee (1), left ankle, left shoulder, left elbow (1); quaternions are w-first.

Retargeting. The DeepMimic humanoid's joint frames are all aligned with the world at rest
(standing, arms hanging down), so its local rotations compose as G_child = G_parent q_child in
world-aligned axes. Anny's 'local-ref' pose parameterisation composes the same way (each delta
is in world-aligned axes about the bone head). So after a change of basis (DeepMimic: x forward,
y up, z right; Anny: x left, y back, z up) a DeepMimic rotation is an Anny delta, except where the
two rest poses differ: Anny stands in an A-pose with bent elbows and slightly spread legs. For
those limbs a fixed rest-alignment rotation C (the shortest rotation taking Anny's rest bone
direction onto DeepMimic's, straight down) is applied: G_anny = G_dm C, and the delta of a bone is
D = G_parent⁻¹ G_bone. The chest rotation is split evenly over LowerBack, Spine and Spine1, the
neck rotation over Neck and Head; clavicles, fingers and toes stay at rest.

Splits. Clips in ``TEST_CLIPS`` are never used for training: the fixed test set (our stand-in for
3DPW) is built from them only.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .anny_body import BODY_BONES, AnnyBody
from .body import COCO18, BodyModelError

TEST_CLIPS = ("dance_b", "kick", "getup_faceup")
_JOINT_LAYOUT = (  # name, number of values
    ("dt", 1), ("root_pos", 3), ("root", 4), ("chest", 4), ("neck", 4),
    ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4), ("right_shoulder", 4), ("right_elbow", 1),
    ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4), ("left_shoulder", 4), ("left_elbow", 1),
)
# DeepMimic (x fwd, y up, z right) → Anny (x left, y back, z up): columns are the images of the
# DeepMimic axes.
_A = np.array([[0.0, 0.0, -1.0],
               [-1.0, 0.0, 0.0],
               [0.0, 1.0, 0.0]])
_PARENT = {"chest": "root", "neck": "chest", "right_hip": "root", "right_knee": "right_hip",
           "right_ankle": "right_knee", "right_shoulder": "chest", "right_elbow": "right_shoulder",
           "left_hip": "root", "left_knee": "left_hip", "left_ankle": "left_knee",
           "left_shoulder": "chest", "left_elbow": "left_shoulder"}
# Anny bone ← DeepMimic joint whose world orientation it takes, and the rest-direction keypoint
# pair (COCO-18 names) that defines its rest alignment (None: no alignment).
_LIMBS = {
    "LeftUpLeg": ("left_hip", ("left_hip", "left_knee")),
    "LeftLeg": ("left_knee", ("left_knee", "left_ankle")),
    "LeftFoot": ("left_ankle", None),
    "RightUpLeg": ("right_hip", ("right_hip", "right_knee")),
    "RightLeg": ("right_knee", ("right_knee", "right_ankle")),
    "RightFoot": ("right_ankle", None),
    "LeftArm": ("left_shoulder", ("left_shoulder", "left_elbow")),
    "LeftForeArm": ("left_elbow", ("left_elbow", "left_wrist")),
    "RightArm": ("right_shoulder", ("right_shoulder", "right_elbow")),
    "RightForeArm": ("right_elbow", ("right_elbow", "right_wrist")),
}


def motions_dir() -> Path:
    try:
        import pybullet_data  # optional: the DeepMimic clips ship inside pybullet
    except ImportError as e:  # pragma: no cover - dependency
        raise BodyModelError("the mocap poses come from the 'pybullet' package (pip install -r requirements.txt)") from e
    d = Path(pybullet_data.getDataPath()) / "data" / "motions"
    if not d.is_dir():
        raise BodyModelError(f"pybullet_data has no motions folder at {d}")
    return d


def clip_names() -> list[str]:
    return sorted(p.stem[len("humanoid3d_"):] for p in motions_dir().glob("humanoid3d_*.txt"))


def _quat_wxyz_to_R(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)
    return R.reshape(q.shape[:-1] + (3, 3))


def _rot_z(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(angle.shape + (3, 3))
    R[..., 0, 0], R[..., 0, 1], R[..., 1, 0], R[..., 1, 1], R[..., 2, 2] = c, -s, s, c, 1.0
    return R


def _shortest_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v = np.cross(a, b)
    s, c = np.linalg.norm(v), float(a @ b)
    if s < 1e-9:
        return np.eye(3)
    k = v / s
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    ang = np.arctan2(s, c)
    return np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K


def _R_to_rotvec(R: np.ndarray) -> np.ndarray:
    import roma  # optional (HMR extras): loaded when a rotation is converted
    return roma.rotmat_to_rotvec(torch.as_tensor(R, dtype=torch.float64)).numpy()


def _rotvec_to_R(v: np.ndarray) -> np.ndarray:
    import roma  # optional (HMR extras): loaded when a rotation is converted
    return roma.rotvec_to_rotmat(torch.as_tensor(v, dtype=torch.float64)).numpy()


def load_clip(name: str) -> dict[str, np.ndarray]:
    path = motions_dir() / f"humanoid3d_{name}.txt"
    if not path.exists():
        raise BodyModelError(f"no mocap clip {name!r}; available: {', '.join(clip_names())}")
    frames = np.asarray(json.loads(path.read_text())["Frames"], dtype=np.float64)
    if frames.ndim != 2 or frames.shape[1] != 44:
        raise BodyModelError(f"{path}: expected frames of 44 numbers, got {frames.shape}")
    out, i = {}, 0
    for key, n in _JOINT_LAYOUT:
        out[key] = frames[:, i:i + n]
        i += n
    return out


@lru_cache(maxsize=1)
def _rest_alignment() -> dict[str, np.ndarray]:
    """C per limb bone: shortest rotation from Anny's rest bone direction to straight down."""
    body = AnnyBody(dtype=torch.float64)
    kp = body.keypoints(torch.zeros(1, body.pose_dim, dtype=torch.float64), body.default_shape(1))[0].numpy()
    down = np.array([0.0, 0.0, -1.0])
    C = {}
    for bone, (_, pair) in _LIMBS.items():
        if pair is None:
            C[bone] = np.eye(3)
        else:
            a = kp[COCO18.index(pair[1])] - kp[COCO18.index(pair[0])]
            C[bone] = _shortest_rotation(a, down)
    return C


def retarget_clip(name: str) -> np.ndarray:
    """(T, 54) Anny pose vectors (BODY_BONES axis-angles; root = the mocap's world orientation)."""
    clip = load_clip(name)
    T = clip["root"].shape[0]
    A = _A
    local = {"root": _quat_wxyz_to_R(clip["root"])}
    for j in ("chest", "neck", "right_hip", "right_ankle", "right_shoulder", "left_hip", "left_ankle",
              "left_shoulder"):
        local[j] = _quat_wxyz_to_R(clip[j])
    for j in ("right_knee", "right_elbow", "left_knee", "left_elbow"):
        local[j] = _rot_z(clip[j][:, 0])
    # world orientations in DeepMimic axes, then in Anny axes
    G_dm = {"root": local["root"]}
    for j in ("chest", "neck", "right_hip", "right_knee", "right_ankle", "right_shoulder", "right_elbow",
              "left_hip", "left_knee", "left_ankle", "left_shoulder", "left_elbow"):
        G_dm[j] = G_dm[_PARENT[j]] @ local[j]
    G = {k: A @ v @ A.T for k, v in G_dm.items()}
    C = _rest_alignment()
    third = lambda R, f: _rotvec_to_R(_R_to_rotvec(R) * f)  # noqa: E731
    chest_local = A @ local["chest"] @ A.T
    neck_local = A @ local["neck"] @ A.T
    Ga = {"Hips": G["root"]}
    Ga["LowerBack"] = Ga["Hips"] @ third(chest_local, 1 / 3)
    Ga["Spine"] = Ga["LowerBack"] @ third(chest_local, 1 / 3)
    Ga["Spine1"] = G["chest"]
    Ga["Neck"] = Ga["Spine1"] @ third(neck_local, 0.5)
    Ga["Head"] = G["neck"]
    Ga["LeftShoulder"] = Ga["Spine1"]
    Ga["RightShoulder"] = Ga["Spine1"]
    for bone, (dm, _) in _LIMBS.items():
        Ga[bone] = G[dm] @ C[bone]
    parent = {"Hips": None, "LowerBack": "Hips", "Spine": "LowerBack", "Spine1": "Spine", "Neck": "Spine1",
              "Head": "Neck", "LeftUpLeg": "Hips", "LeftLeg": "LeftUpLeg", "LeftFoot": "LeftLeg",
              "RightUpLeg": "Hips", "RightLeg": "RightUpLeg", "RightFoot": "RightLeg",
              "LeftShoulder": "Spine1", "LeftArm": "LeftShoulder", "LeftForeArm": "LeftArm",
              "RightShoulder": "Spine1", "RightArm": "RightShoulder", "RightForeArm": "RightArm"}
    pose = np.zeros((T, len(BODY_BONES), 3))
    for i, bone in enumerate(BODY_BONES):
        p = parent[bone]
        D = Ga[bone] if p is None else np.swapaxes(Ga[p], -1, -2) @ Ga[bone]
        pose[:, i] = _R_to_rotvec(D)
    return pose.reshape(T, -1)


def remove_heading(pose: np.ndarray) -> np.ndarray:
    """Rotate each frame's root about the vertical (Anny z) so the body faces a fixed heading
    (the pelvis's forward axis projected on the ground points to −y); tilt is kept."""
    pose = pose.copy()
    R = _rotvec_to_R(pose[:, :3])
    fwd = R @ np.array([0.0, -1.0, 0.0])
    yaw = np.arctan2(fwd[:, 0], -fwd[:, 1])  # angle of fwd from −y about z
    c, s = np.cos(-yaw), np.sin(-yaw)
    Rz = np.zeros_like(R)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1.0
    pose[:, :3] = _R_to_rotvec(Rz @ R)
    return pose


@lru_cache(maxsize=4)
def mocap_poses(split: str = "train") -> tuple[np.ndarray, tuple[str, ...]]:
    """(T, 54) heading-normalised poses of the train or test clips, and the clip name per frame."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    names = [n for n in clip_names() if split == "all" or ((n in TEST_CLIPS) == (split == "test"))]
    poses, owner = [], []
    for n in names:
        p = remove_heading(retarget_clip(n))
        poses.append(p)
        owner += [n] * len(p)
    return np.concatenate(poses).astype(np.float32), tuple(owner)


def joint_limit_box(margin_deg: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate box [lo, hi] of the non-root pose coordinates (axis-angle, world-aligned
    axes): the range the training mocap covers, widened by ``margin_deg`` on each side. Used as
    the joint-limit prior that widens the mocap set."""
    poses, _ = mocap_poses("train")
    m = np.deg2rad(margin_deg)
    return poses[:, 3:].min(0) - m, poses[:, 3:].max(0) + m
