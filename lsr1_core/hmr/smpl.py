"""SMPL as a ``BodyModel``, through ``smplx.SMPL``, loaded without the plain pickle module.

SMPL (Loper et al. 2015) is licensed separately and not shipped: the user points the project at
their copy, either with ``SMPLBody(model_path=...)`` or with the environment variable
``LSR1_SMPL_MODEL`` (a model file such as ``SMPL_NEUTRAL.pkl`` or
``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``, or a folder holding one). The file is read by
``safe_unpickle.safe_load_pickle`` (numpy / scipy / chumpy data only; never arbitrary code), its chumpy
nodes evaluated to arrays, and the arrays handed to ``smplx.SMPL`` as its ``data_struct``, so smplx
never unpickles anything itself. ``.npz`` model files load with ``allow_pickle=False``.

Parameters: pose θ (B, 72) = global orientation (3) + 23 body joints (69), axis-angle, SMPL's
joint order; shape β (B, K), K = ``num_betas`` (10 by default, fewer when the file has fewer).

Keypoints: OpenPose COCO-18 from SMPL's 24 posed joints (neck = SMPL joint 12, shoulders 16/17,
elbows 18/19, wrists 20/21, hips 1/2, knees 4/5, ankles 7/8) and five skinned vertices for the
nose, eyes and ears (smplx's ``vertex_ids`` table; a synthetic model passes its own). They are
computed exactly as ``smplx.SMPL.forward`` would (tested), but without skinning the mesh: the
joints are a linear function of β (J_regressor · shapedirs precomputed), and only the five face
vertices get blend shapes and skinning. No translation is applied; SMPL's pelvis sits near the
origin (about 0.2 m below it for the official models).
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from .body import COCO18, BodyModel, BodyModelError
from ..safe_unpickle import DataFormatError, UnsafePickleError, safe_load_pickle, to_numpy

ENV_VAR = "LSR1_SMPL_MODEL"
SMPL_URL = "https://smpl.is.tue.mpg.de"

SMPL_JOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)
# SMPL's kinematic tree (kintree_table[0]; the root's parent is stored as 2**32 - 1).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# smplx appends these vertex keypoints after the 24 joints (use_hands/feet off), in this order.
FACE_VERTEX_KEYS = ("nose", "reye", "leye", "rear", "lear")
_COCO_SOURCE = {
    "nose": "nose", "neck": "neck", "right_shoulder": "right_shoulder", "right_elbow": "right_elbow",
    "right_wrist": "right_wrist", "left_shoulder": "left_shoulder", "left_elbow": "left_elbow",
    "left_wrist": "left_wrist", "right_hip": "right_hip", "right_knee": "right_knee",
    "right_ankle": "right_ankle", "left_hip": "left_hip", "left_knee": "left_knee",
    "left_ankle": "left_ankle", "right_eye": "reye", "left_eye": "leye", "right_ear": "rear",
    "left_ear": "lear",
}
_SOURCES = SMPL_JOINTS + FACE_VERTEX_KEYS
COCO18_FROM_SMPL = tuple(_SOURCES.index(_COCO_SOURCE[n]) for n in COCO18)  # into the 29 smplx joints

_FILE_NAMES = {
    "neutral": ("SMPL_NEUTRAL.pkl", "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
                "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl", "SMPL_NEUTRAL.npz"),
    "male": ("SMPL_MALE.pkl", "basicmodel_m_lbs_10_207_0_v1.0.0.pkl",
             "basicmodel_m_lbs_10_207_0_v1.1.0.pkl", "SMPL_MALE.npz"),
    "female": ("SMPL_FEMALE.pkl", "basicModel_f_lbs_10_207_0_v1.0.0.pkl",
               "basicmodel_f_lbs_10_207_0_v1.1.0.pkl", "SMPL_FEMALE.npz"),
}
_REQUIRED = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def _how_to() -> str:
    return (f"pass model_path=... or set the environment variable {ENV_VAR} to an SMPL model file "
            f"(e.g. SMPL_NEUTRAL.pkl) or the folder holding it; SMPL is licensed separately, "
            f"download it from {SMPL_URL}")


def resolve_smpl_path(model_path: str | os.PathLike | None = None, gender: str = "neutral") -> Path:
    """The SMPL model file to load: ``model_path``, else ``$LSR1_SMPL_MODEL``; a folder is
    searched (case-insensitively, also in its ``smpl/`` subfolder) for the gender's usual names."""
    gender = gender.lower()
    if gender not in _FILE_NAMES:
        raise BodyModelError(f"smpl: gender must be one of {sorted(_FILE_NAMES)}, got {gender!r}")
    if model_path is not None and str(model_path) != "":
        src, where = str(model_path), "the model_path argument"
    else:
        src = os.environ.get(ENV_VAR, "")
        where = f"the environment variable {ENV_VAR}"
        if not src:
            raise BodyModelError(f"smpl: no SMPL model given (model_path is None and {ENV_VAR} is "
                                 f"not set): {_how_to()}")
    p = Path(src).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        looked = []
        for folder in (p, p / "smpl"):
            names = {c.name.lower(): c for c in folder.iterdir()} if folder.is_dir() else {}
            for n in _FILE_NAMES[gender]:
                looked.append(str(folder / n))
                if n.lower() in names and names[n.lower()].is_file():
                    return names[n.lower()]
        raise BodyModelError(f"smpl: the folder {p} (from {where}) holds no {gender} SMPL model; "
                             f"looked for {looked}. {_how_to()}")
    raise BodyModelError(f"smpl: the SMPL model path {p} (from {where}) does not exist. {_how_to()}")


def _read_model_file(path: Path) -> dict:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        else:
            data = safe_load_pickle(path)
    except UnsafePickleError as e:
        raise BodyModelError(f"smpl: {path} is not a plain SMPL model pickle: {e}") from e
    except (DataFormatError, OSError, ValueError) as e:
        raise BodyModelError(f"smpl: could not read the SMPL model {path} ({e}). {_how_to()}") from e
    if not isinstance(data, dict):
        raise BodyModelError(f"smpl: {path} does not hold an SMPL model (a dict of arrays); "
                             f"it holds a {type(data).__name__}")
    return data


def load_smpl_arrays(path: str | os.PathLike, num_betas: int | None = None) -> dict:
    """The SMPL model file's arrays, checked and converted to plain numpy (float64 / int64):
    v_template (V,3), shapedirs (V,3,K), posedirs (V,3,207), J_regressor (24,V) dense,
    weights (V,24), kintree_table (2,24), f (F,3); plus ``vertex_ids`` when the file has one."""
    path = Path(path)
    data = _read_model_file(path)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise BodyModelError(f"smpl: {path} is not an SMPL model file: missing {missing} "
                             f"(found {sorted(map(str, data))})")
    out = {}
    try:
        for k in _REQUIRED:
            out[k] = np.asarray(to_numpy(data[k]))
    except DataFormatError as e:
        raise BodyModelError(f"smpl: {path}: {e}") from e
    v, sd, pd, jr = out["v_template"], out["shapedirs"], out["posedirs"], out["J_regressor"]
    w, kt, f = out["weights"], out["kintree_table"], out["f"]

    def bad(what):
        raise BodyModelError(f"smpl: {path} is not an SMPL model: {what}")
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 1:
        bad(f"v_template must be (V, 3), got {v.shape}")
    V = v.shape[0]
    if kt.shape != (2, 24):
        bad(f"kintree_table must be (2, 24) for SMPL's 24 joints, got {kt.shape}"
            + (" (an SMPL+H / SMPL-X file?)" if kt.ndim == 2 and kt.shape[1] > 24 else ""))
    if sd.ndim != 3 or sd.shape[:2] != (V, 3) or sd.shape[2] < 1:
        bad(f"shapedirs must be (V, 3, K) = ({V}, 3, K), got {sd.shape}")
    if pd.shape != (V, 3, 207):
        bad(f"posedirs must be (V, 3, 207) = ({V}, 3, 207), got {pd.shape}")
    if jr.shape != (24, V):
        bad(f"J_regressor must be (24, V) = (24, {V}), got {jr.shape}")
    if w.shape != (V, 24):
        bad(f"weights must be (V, 24) = ({V}, 24), got {w.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] < 1:
        bad(f"f must be (F, 3), got {f.shape}")
    for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.issubdtype(out[k].dtype, np.number) or not np.isfinite(out[k]).all():
            bad(f"{k} must be finite numbers")
    if not np.issubdtype(f.dtype, np.integer) or f.min() < 0 or f.max() >= V:
        bad(f"f must hold vertex indices in [0, {V})")
    parents = kt[0].astype(np.int64)
    parents[0] = -1
    if tuple(parents.tolist()) != SMPL_PARENTS:
        bad(f"kintree_table's parents {parents.tolist()} are not SMPL's {list(SMPL_PARENTS)}")
    K = sd.shape[2]
    nb = K if num_betas is None else int(num_betas)
    if nb < 1:
        raise BodyModelError(f"smpl: num_betas must be ≥ 1, got {num_betas}")
    nb = min(nb, K)
    res = {"v_template": v.astype(np.float64), "shapedirs": sd[:, :, :nb].astype(np.float64),
           "posedirs": pd.astype(np.float64), "J_regressor": jr.astype(np.float64),
           "weights": w.astype(np.float64), "kintree_table": np.stack([parents, np.arange(24)]),
           "f": f.astype(np.int64)}
    if "vertex_ids" in data and isinstance(data["vertex_ids"], dict):
        res["vertex_ids"] = {str(k): int(val) for k, val in data["vertex_ids"].items()}
    return res


class SMPLBody(BodyModel):
    """SMPL through ``smplx.SMPL``; see the module docstring."""

    name = "smpl"
    pose_dim = 72

    def __init__(self, model_path: str | os.PathLike | None = None, gender: str = "neutral",
                 num_betas: int = 10, vertex_ids: dict | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        try:
            import smplx  # optional: only the SMPL body needs it (and the licensed file)
            from smplx.utils import Struct
            from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS
        except ImportError as e:  # pragma: no cover - a project dependency
            raise BodyModelError("the SMPL body model needs the 'smplx' package (pip install smplx)") from e
        self.model_path = resolve_smpl_path(model_path, gender)
        self.gender = gender.lower()
        arrays = load_smpl_arrays(self.model_path, num_betas)
        V = arrays["v_template"].shape[0]
        vid = vertex_ids if vertex_ids is not None else arrays.get("vertex_ids")
        if vid is None:
            if V != 6890:
                raise BodyModelError(f"smpl: {self.model_path} has {V} vertices, not SMPL's 6890, so "
                                     "smplx's face-keypoint vertex ids do not apply: pass vertex_ids="
                                     f"{{{', '.join(repr(k) + ': i' for k in FACE_VERTEX_KEYS)}}}")
            vid = SMPLX_VERTEX_IDS["smplh"]
        missing = [k for k in FACE_VERTEX_KEYS if k not in vid]
        if missing:
            raise BodyModelError(f"smpl: vertex_ids lacks {missing}")
        face_ids = [int(vid[k]) for k in FACE_VERTEX_KEYS]
        if min(face_ids) < 0 or max(face_ids) >= V:
            raise BodyModelError(f"smpl: vertex_ids {dict(zip(FACE_VERTEX_KEYS, face_ids))} out of range "
                                 f"for a model with {V} vertices")
        self.shape_dim = int(arrays["shapedirs"].shape[2])
        self.face_vertex_ids = tuple(face_ids)
        struct = Struct(**{k: arrays[k] for k in _REQUIRED})
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note about 10 betas
            self.smpl = smplx.SMPL(
                model_path=str(self.model_path), data_struct=struct, num_betas=self.shape_dim,
                create_betas=False, create_global_orient=False, create_body_pose=False,
                create_transl=False, dtype=dtype, gender=self.gender,
                vertex_ids={k: int(vid[k]) for k in FACE_VERTEX_KEYS},
                use_hands=False, use_feet_keypoints=False)
        # Fast keypoints: joints linear in β; only the face vertices are skinned.
        f64 = torch.float64
        jr = torch.as_tensor(arrays["J_regressor"], dtype=f64)
        vt = torch.as_tensor(arrays["v_template"], dtype=f64)
        sd = torch.as_tensor(arrays["shapedirs"], dtype=f64)
        ids = torch.tensor(face_ids)
        pd = torch.as_tensor(arrays["posedirs"], dtype=f64)  # (V, 3, 207)
        self.register_buffer("J_template", (jr @ vt).to(dtype))  # (24, 3)
        self.register_buffer("J_shapedirs", torch.einsum("jv,vdk->jdk", jr, sd).to(dtype))  # (24, 3, K)
        self.register_buffer("face_template", vt[ids].to(dtype))  # (5, 3)
        self.register_buffer("face_shapedirs", sd[ids].to(dtype))  # (5, 3, K)
        self.register_buffer("face_posedirs", pd[ids].reshape(-1, 207).T.contiguous().to(dtype))  # (207, 15)
        self.register_buffer("face_weights", torch.as_tensor(arrays["weights"][face_ids], dtype=dtype))  # (5, 24)
        self.register_buffer("coco_index", torch.tensor(COCO18_FROM_SMPL, dtype=torch.long))
        self.to(device)

    # -- BodyModel ---------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.J_template.dtype

    @property
    def faces(self) -> torch.Tensor:
        return self.smpl.faces_tensor

    def default_shape(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.shape_dim, dtype=self.dtype, device=self.J_template.device)

    def signature(self) -> dict:
        sig = super().signature()
        sig["gender"] = self.gender
        return sig

    def _keypoints(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        from smplx.lbs import batch_rigid_transform, batch_rodrigues  # optional, as in __init__
        dt = self.dtype
        pose, shape = pose.to(dt), shape.to(dt)
        B = pose.shape[0]
        J = self.J_template + torch.einsum("bk,jdk->bjd", shape, self.J_shapedirs)
        rot = batch_rodrigues(pose.reshape(-1, 3)).view(B, 24, 3, 3)
        Jt, A = batch_rigid_transform(rot, J, self.smpl.parents, dtype=dt)
        ident = torch.eye(3, dtype=dt, device=pose.device)
        pose_feature = (rot[:, 1:] - ident).reshape(B, -1)
        v = self.face_template + torch.einsum("bk,vdk->bvd", shape, self.face_shapedirs)
        v = v + (pose_feature @ self.face_posedirs).view(B, -1, 3)
        T = torch.einsum("vj,bjrc->bvrc", self.face_weights, A)
        v = torch.einsum("bvrc,bvc->bvr", T[..., :3, :3], v) + T[..., :3, 3]
        return torch.cat([Jt, v], 1)[:, self.coco_index]

    def smplx_output(self, pose: torch.Tensor, shape: torch.Tensor):
        """The full ``smplx.SMPL`` forward (vertices and its 29 joints: SMPL's 24 + 5 face vertices)."""
        self.check(pose, shape)
        dt = self.dtype
        pose, shape = pose.to(dt), shape.to(dt)
        return self.smpl(betas=shape, global_orient=pose[:, :3], body_pose=pose[:, 3:])

    def _vertices(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return self.smplx_output(pose, shape).vertices


# -- test fixture ------------------------------------------------------------------------------
