"""Loaders for the real motion data formats users bring: AMASS ``.npz`` (never unpickled) and 3DPW ``.pkl`` (through
the restricted unpickler of :mod:`lsr1_core.safe_unpickle`, which also loads the SMPL-family model files of
``hmr.smpl``; why a restricted unpickler is explained there).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LSR1Error, NonFiniteError
from ..safe_unpickle import DataFormatError, safe_load_pickle, to_numpy

__all__ = ["load_amass_npz", "ThreeDPWSequence", "load_3dpw_sequence"]


# -- AMASS -------------------------------------------------------------------------------------
_AMASS_POSE_DIMS = {72: "SMPL", 66: "SMPL body without hands", 156: "SMPL+H", 165: "SMPL-X"}


def _str_of(value) -> str:
    a = np.asarray(value)
    v = a.item() if a.ndim == 0 else (a.ravel()[0] if a.size == 1 else a)
    if isinstance(v, bytes):
        v = v.decode("latin1")
    if not isinstance(v, str):
        raise DataFormatError(f"expected a string, got {a.dtype} array of shape {a.shape}")
    return v


def load_amass_npz(path: str | os.PathLike) -> dict:
    """Load one AMASS motion ``.npz`` (never unpickling: ``allow_pickle=False``).

    Accepts poses of width 156 (SMPL+H: root 0:3, body 3:66, hands 66:156), 165 (SMPL-X: …,
    jaw/eyes 66:75, hands 75:165), 72 (SMPL) or 66. Returns a dict:
      * ``poses`` (T, 72) float64 in SMPL layout: root (3), the 21 body joints (63), and SMPL's two
        hand joints (6), which are the file's own for 72-wide input and zeros otherwise;
      * ``root_orient`` (T, 3) and ``body_pose`` (T, 63): the SMPL-body part;
      * ``trans`` (T, 3); ``betas`` (K,) float64; ``gender`` ('male'/'female'/'neutral'; 'neutral'
        when the file has none); ``fps`` (from ``mocap_framerate`` or ``mocap_frame_rate``);
      * ``n_frames``; ``source_pose_dim`` (the file's pose width).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such AMASS file: {p}")
    if not zipfile.is_zipfile(p):
        raise DataFormatError(f"{p} is not an .npz archive (AMASS motions are .npz files)")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)

            def get(k):
                try:
                    return z[k]
                except ValueError as e:  # object arrays need pickle: refused
                    raise DataFormatError(f"{p}: key '{k}' holds Python objects (pickled); "
                                          "refusing to load it with allow_pickle=False") from e
            missing = [k for k in ("poses", "trans", "betas") if k not in keys]
            if missing:
                hint = (" (this looks like an AMASS shape.npz, which holds only the subject's betas "
                        "and gender; pick a motion file)") if "poses" not in keys and "betas" in keys else ""
                raise DataFormatError(f"{p}: missing AMASS key(s) {missing}; found {sorted(keys)}{hint}")
            fps_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in keys), None)
            if fps_key is None:
                raise DataFormatError(f"{p}: no frame rate: expected 'mocap_framerate' or "
                                      f"'mocap_frame_rate'; found {sorted(keys)}")
            poses, trans, betas, fps = get("poses"), get("trans"), get("betas"), get(fps_key)
            gender = _str_of(get("gender")) if "gender" in keys else "neutral"
    except zipfile.BadZipFile as e:
        raise DataFormatError(f"{p} is a damaged .npz archive ({e})") from e

    for k, a in (("poses", poses), ("trans", trans), ("betas", betas), (fps_key, fps)):
        dt = np.asarray(a).dtype
        if not np.issubdtype(dt, np.number) or np.issubdtype(dt, np.complexfloating):
            raise DataFormatError(f"{p}: '{k}' must hold real numbers, got dtype {dt}"
                                  + (" (complex values would lose their imaginary part)"
                                     if np.issubdtype(dt, np.complexfloating) else ""))
    poses = np.asarray(poses, dtype=np.float64)
    trans = np.asarray(trans, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] not in _AMASS_POSE_DIMS:
        raise DataFormatError(f"{p}: 'poses' must be (T, D) with D one of {sorted(_AMASS_POSE_DIMS)} "
                              f"({', '.join(f'{d}: {n}' for d, n in _AMASS_POSE_DIMS.items())}); "
                              f"got {poses.shape}")
    T = poses.shape[0]
    if T == 0:
        raise DataFormatError(f"{p}: 'poses' has no frames")
    if trans.shape != (T, 3):
        raise DataFormatError(f"{p}: 'trans' must be (T, 3) = ({T}, 3) to match 'poses', got {trans.shape}")
    if betas.ndim == 2 and betas.shape[0] == 1:
        betas = betas[0]
    if betas.ndim != 1 or betas.size == 0:
        raise DataFormatError(f"{p}: 'betas' must be a vector (K,), got {betas.shape}")
    if np.asarray(fps).size != 1:
        raise DataFormatError(f"{p}: '{fps_key}' must be one number, got shape {np.asarray(fps).shape}")
    fps = float(np.asarray(fps).ravel()[0])
    if not np.isfinite(fps) or fps <= 0:
        raise DataFormatError(f"{p}: frame rate '{fps_key}' must be positive, got {fps}")
    for k, a in (("poses", poses), ("trans", trans), ("betas", betas)):
        if not np.isfinite(a).all():
            raise NonFiniteError(f"{p}: '{k}' contains NaN or infinity")
    gender = gender.strip().lower()
    gender = {"m": "male", "f": "female", "n": "neutral"}.get(gender, gender)
    if gender not in ("male", "female", "neutral"):
        raise DataFormatError(f"{p}: unknown gender {gender!r} (expected male, female or neutral)")
    D = poses.shape[1]
    hands = poses[:, 66:72] if D == 72 else np.zeros((T, 6))
    return {
        "poses": np.concatenate([poses[:, :66], hands], 1),
        "root_orient": poses[:, :3].copy(),
        "body_pose": poses[:, 3:66].copy(),
        "trans": trans,
        "betas": betas,
        "gender": gender,
        "fps": fps,
        "n_frames": T,
        "source_pose_dim": D,
    }


# -- 3DPW --------------------------------------------------------------------------------------
@dataclass
class ThreeDPWSequence:
    """One 3DPW sequence; per-actor lists hold one entry per actor, N frames each.

    poses (N, 72) SMPL axis-angle; betas (10,); trans (N, 3); joints3d (N, 24, 3) SMPL joints in
    world coordinates (from ``jointPositions``); poses2d (N, 18, 3) OpenPose COCO-18 (x, y, conf)
    in pixels; campose_valid (N,) bool. cam_poses (N, 4, 4) world→camera; cam_intrinsics (3, 3);
    img_frame_ids (N,) image indices; genders 'm'/'f' per actor.
    """

    sequence: str
    genders: list[str]
    poses: list[np.ndarray]
    betas: list[np.ndarray]
    trans: list[np.ndarray]
    joints3d: list[np.ndarray]
    poses2d: list[np.ndarray]
    campose_valid: list[np.ndarray]
    cam_poses: np.ndarray
    cam_intrinsics: np.ndarray
    img_frame_ids: np.ndarray
    extra_keys: list[str] = field(default_factory=list)

    @property
    def n_actors(self) -> int:
        return len(self.poses)

    @property
    def n_frames(self) -> int:
        return int(self.cam_poses.shape[0])


_3DPW_ACTOR_KEYS = ("betas", "poses", "trans", "jointPositions", "poses2d", "campose_valid", "genders")
_3DPW_KEYS = _3DPW_ACTOR_KEYS + ("sequence", "cam_poses", "cam_intrinsics", "img_frame_ids")


def load_3dpw_sequence(path: str | os.PathLike) -> ThreeDPWSequence:
    """Load a 3DPW sequence ``.pkl`` (a Python-2 pickle) through the restricted unpickler."""
    p = Path(path)
    data = safe_load_pickle(p, encoding="latin1")
    try:
        return _3dpw_from(p, data)
    except (RecursionError, MemoryError, TypeError, ValueError, OverflowError) as e:
        if isinstance(e, LSR1Error):
            raise
        raise DataFormatError(f"{p}: not a 3DPW sequence ({type(e).__name__}: {e})") from None


def _3dpw_from(p: Path, data) -> ThreeDPWSequence:
    if not isinstance(data, dict):
        raise DataFormatError(f"{p}: a 3DPW sequence pickle holds a dict, got {type(data).__name__}")
    missing = [k for k in _3DPW_KEYS if k not in data]
    if missing:
        raise DataFormatError(f"{p}: missing 3DPW key(s) {missing}; found {sorted(map(str, data))}")
    cam_poses = np.asarray(to_numpy(data["cam_poses"]), dtype=np.float64)
    if cam_poses.ndim != 3 or cam_poses.shape[1:] != (4, 4):
        raise DataFormatError(f"{p}: 'cam_poses' must be (N, 4, 4), got {cam_poses.shape}")
    N = cam_poses.shape[0]
    K = np.asarray(to_numpy(data["cam_intrinsics"]), dtype=np.float64)
    if K.shape != (3, 3):
        raise DataFormatError(f"{p}: 'cam_intrinsics' must be (3, 3), got {K.shape}")
    frames = np.asarray(to_numpy(data["img_frame_ids"]))
    if frames.shape != (N,) or not np.issubdtype(frames.dtype, np.integer):
        raise DataFormatError(f"{p}: 'img_frame_ids' must be ({N},) integers, got {frames.shape} {frames.dtype}")
    lists = {}
    for k in _3DPW_ACTOR_KEYS:
        v = data[k]
        if not isinstance(v, (list, tuple)):
            raise DataFormatError(f"{p}: '{k}' must be a per-actor list, got {type(v).__name__}")
        lists[k] = list(v)
    n_act = {k: len(v) for k, v in lists.items()}
    if len(set(n_act.values())) != 1 or n_act["poses"] == 0:
        raise DataFormatError(f"{p}: per-actor lists disagree on the number of actors (or are empty): {n_act}")

    def arr(k, i, shape, dtype=np.float64):
        a = np.asarray(to_numpy(lists[k][i]), dtype=dtype)
        if a.shape != shape:
            raise DataFormatError(f"{p}: actor {i} '{k}' must have shape {shape}, got {a.shape}")
        return a

    poses, betas, trans, joints, kp2d, valid, genders = [], [], [], [], [], [], []
    for i in range(n_act["poses"]):
        poses.append(arr("poses", i, (N, 72)))
        b = np.asarray(to_numpy(lists["betas"][i]), dtype=np.float64)
        if b.ndim != 1 or b.size == 0:
            raise DataFormatError(f"{p}: actor {i} 'betas' must be a vector, got {b.shape}")
        betas.append(b)
        trans.append(arr("trans", i, (N, 3)))
        joints.append(arr("jointPositions", i, (N, 72)).reshape(N, 24, 3))
        kp2d.append(np.ascontiguousarray(arr("poses2d", i, (N, 3, 18)).transpose(0, 2, 1)))
        valid.append(arr("campose_valid", i, (N,)).astype(bool))
        g = lists["genders"][i]
        genders.append(g.decode("latin1") if isinstance(g, bytes) else str(g))
    seq = data["sequence"]
    seq = seq.decode("latin1") if isinstance(seq, bytes) else str(seq)
    return ThreeDPWSequence(sequence=seq, genders=genders, poses=poses, betas=betas, trans=trans,
                            joints3d=joints, poses2d=kp2d, campose_valid=valid, cam_poses=cam_poses,
                            cam_intrinsics=K, img_frame_ids=frames,
                            extra_keys=sorted(str(k) for k in data if k not in _3DPW_KEYS))
