"""Loaders for the real data formats users bring: SMPL-family pickles, AMASS ``.npz``, 3DPW ``.pkl``.

Why a restricted unpickler. A pickle is a program: unpickling calls whatever callables the file
names (``os.system`` included), so the project never opens a user-handed file with the plain
``pickle`` module. ``safe_load_pickle`` uses an ``Unpickler`` whose ``find_class`` resolves only
the few names that plain data needs:

  * numpy arrays, scalars and dtypes (``numpy.core.multiarray._reconstruct`` / ``scalar``, their
    numpy ≥ 2 ``numpy._core`` spellings, ``numpy.core.numeric._frombuffer`` for protocol 5,
    ``numpy.ndarray``, ``numpy.dtype``);
  * scipy.sparse CSC/CSR matrices and arrays (SMPL's ``J_regressor``), under their old
    (``scipy.sparse.csc``) and new (``scipy.sparse._csc``) module names;
  * builtin containers (dict, list, tuple, set, frozenset, bytearray, complex, object),
    ``collections.OrderedDict``, ``copyreg._reconstructor`` restricted to the classes above, and
    ``_codecs.encode`` restricted to the latin-1/UTF-8/ASCII codecs (how Python 3 writes bytes at
    protocol ≤ 2);
  * chumpy objects, which official SMPL/MANO pickles contain and whose package no longer works
    with numpy ≥ 1.24 / Python ≥ 3.11. They are *not* imported: ``chumpy.*`` classes map onto
    ``ChumpyStandIn``, which only stores the pickled state. ``.r`` (and ``np.asarray``) evaluates
    the node types that hold data in official model files: ``Ch`` (its array ``x``),
    ``reordering.Select`` (``a.ravel()[idxs].reshape(preferred_shape)``, as chumpy computes it),
    ``reordering.transpose`` and ``reordering.Reshape``; other chumpy nodes load as opaque
    stand-ins whose ``.r`` raises.

Every other global is refused with ``UnsafePickleError`` naming it, before anything is called.
Python-2 pickles (3DPW, SMPL v1.0) need ``encoding='latin1'``, the default here; it only affects
Python-2 ``str`` objects, so Python-3 pickles load the same.
"""
from __future__ import annotations

import codecs
import collections
import copyreg
import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LSR1Error, NonFiniteError

__all__ = [
    "UnsafePickleError", "DataFormatError", "ChumpyStandIn", "safe_load_pickle", "safe_loads_pickle",
    "to_numpy", "load_amass_npz", "ThreeDPWSequence", "load_3dpw_sequence",
]


class UnsafePickleError(LSR1Error, pickle.UnpicklingError):
    """A pickle names a global that the restricted unpickler does not allow."""


class DataFormatError(LSR1Error):
    """A data file is unreadable or lacks the keys / shapes its format requires."""


# -- chumpy stand-ins --------------------------------------------------------------------------
class ChumpyStandIn:
    """What a pickled chumpy node becomes: its state, without chumpy.

    ``chumpy_class`` is the pickled class path (e.g. ``"chumpy.ch.Ch"``); ``state`` the pickled
    ``__dict__``. ``.r`` is the node's value as a numpy array (for the node types listed in the
    module docstring), ``.x`` the raw array of a plain ``Ch``.
    """

    chumpy_class = "chumpy"

    def __init__(self, *args, **kwargs):  # chumpy's own pickles never call this; be permissive
        self.state: dict = {}
        if args:
            self.state["x"] = args[0]
        self.state.update(kwargs)

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.chumpy_class}: unexpected pickled state of type "
                                    f"{type(state).__name__} (expected a dict)")
        self.state = state

    def __reduce__(self):  # re-pickling a stand-in gives a plain array, never a chumpy reference
        return self.r.__reduce__()

    # value ---------------------------------------------------------------------------------
    def _compute(self) -> np.ndarray:
        raise DataFormatError(f"cannot evaluate a pickled {self.chumpy_class} node without chumpy "
                              "(only Ch, reordering.Select, reordering.transpose and "
                              "reordering.Reshape are supported)")

    @property
    def r(self) -> np.ndarray:
        cached = self.__dict__.get("_r")
        if cached is None:
            cached = np.asarray(self._compute())
            self.__dict__["_r"] = cached
        return cached

    def _term(self, name: str):
        if name not in self.state:
            raise DataFormatError(f"pickled {self.chumpy_class} node lacks its '{name}' term")
        return self.state[name]

    @property
    def x(self):
        return to_numpy(self._term("x"))

    @property
    def shape(self):
        return self.r.shape

    @property
    def ndim(self):
        return self.r.ndim

    def __array__(self, dtype=None, copy=None):
        r = self.r
        return r.astype(dtype) if dtype is not None else r

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.chumpy_class}>"


class _ChCh(ChumpyStandIn):
    chumpy_class = "chumpy.ch.Ch"

    def _compute(self):
        return to_numpy(self._term("x"))


class _ChSelect(ChumpyStandIn):
    chumpy_class = "chumpy.reordering.Select"

    def _compute(self):
        a = to_numpy(self._term("a"))
        out = np.asarray(a).ravel()[np.asarray(to_numpy(self._term("idxs")))].copy()
        if "preferred_shape" in self.state:
            out = out.reshape(tuple(self.state["preferred_shape"]))
        return out


class _ChTranspose(ChumpyStandIn):
    chumpy_class = "chumpy.reordering.transpose"

    def _compute(self):
        axes = self.state.get("axes")
        return np.ascontiguousarray(np.transpose(to_numpy(self._term("a")), axes=axes))


class _ChReshape(ChumpyStandIn):
    chumpy_class = "chumpy.reordering.Reshape"

    def _compute(self):
        return to_numpy(self._term("a")).reshape(self._term("newshape"))


_CHUMPY_CLASSES = {
    ("chumpy.ch", "Ch"): _ChCh, ("chumpy", "Ch"): _ChCh,
    ("chumpy.reordering", "Select"): _ChSelect,
    ("chumpy.reordering", "transpose"): _ChTranspose,
    ("chumpy.reordering", "Reshape"): _ChReshape,
}
_OPAQUE_CHUMPY: dict[tuple[str, str], type] = {}


def _chumpy_class(module: str, name: str) -> type:
    cls = _CHUMPY_CLASSES.get((module, name))
    if cls is not None:
        return cls
    key = (module, name)
    if key not in _OPAQUE_CHUMPY:  # one opaque stand-in class per chumpy class name
        _OPAQUE_CHUMPY[key] = type(f"_Chumpy_{name}", (ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})
    return _OPAQUE_CHUMPY[key]


def to_numpy(value: Any) -> Any:
    """A chumpy stand-in as its numpy value, a scipy sparse matrix as a dense array, a numpy
    array unchanged; anything else through ``np.asarray``."""
    if isinstance(value, ChumpyStandIn):
        return value.r
    if hasattr(value, "toarray") and "scipy.sparse" in type(value).__module__:
        return value.toarray()
    return np.asarray(value)


# -- the restricted unpickler ------------------------------------------------------------------
def _numpy_attr(submodule: str, name: str):
    """numpy's ``_core`` (numpy ≥ 2) or ``core`` (numpy 1.x) internals, without the numpy 2
    deprecation shim."""
    import importlib
    for pkg in ("numpy._core", "numpy.core"):
        try:
            mod = importlib.import_module(f"{pkg}.{submodule}")
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise UnsafePickleError(f"numpy has no {submodule}.{name} here")


_SAFE_CODECS = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "utf-8", "utf8", "ascii"}


def _safe_encode(obj, encoding="utf-8", errors="strict"):
    if str(encoding).lower().replace("_", "-") not in _SAFE_CODECS:
        raise UnsafePickleError(f"pickle asks for _codecs.encode with codec {encoding!r}; "
                                "only latin-1, UTF-8 and ASCII are allowed")
    return codecs.encode(obj, encoding, errors)


def _sparse(name: str):
    import scipy.sparse
    cls = getattr(scipy.sparse, name, None)
    if cls is None:
        raise UnsafePickleError(f"this scipy has no scipy.sparse.{name}")
    return cls


_SPARSE_NAMES = ("csc_matrix", "csr_matrix", "csc_array", "csr_array")
_SPARSE_MODULES = ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse.csr", "scipy.sparse._csc",
                   "scipy.sparse._csr", "scipy.sparse._arrays", "scipy.sparse.compressed",
                   "scipy.sparse._compressed")
_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset,
             "bytearray": bytearray, "complex": complex, "object": object}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _allowed_class_set() -> set:
    return set(_CHUMPY_CLASSES.values()) | set(_OPAQUE_CHUMPY.values())


def _safe_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 object pickles) for the allowed classes only."""
    import scipy.sparse
    ok = isinstance(cls, type) and (issubclass(cls, ChumpyStandIn) or
                                    any(cls is getattr(scipy.sparse, n, None) for n in _SPARSE_NAMES))
    if not ok or base is not object:
        raise UnsafePickleError(f"copyreg._reconstructor refused for {getattr(cls, '__name__', cls)!r} "
                                f"with base {getattr(base, '__name__', base)!r}")
    return copyreg._reconstructor(cls, base, state)


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only plain-data globals (see the module docstring)."""

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return _numpy_attr("multiarray", name)
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return _numpy_attr("numeric", name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier():
            import numpy.dtypes
            cls = getattr(numpy.dtypes, name, None)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return _sparse(name)
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "copyreg" and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _safe_encode
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_class(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle global '{module}.{name}': only numpy arrays, scipy sparse "
            "matrices, builtin containers and chumpy data nodes are allowed in data files "
            "(a pickle can run arbitrary code, so anything else is refused)")


def safe_loads_pickle(data: bytes, encoding: str = "latin1") -> Any:
    """``safe_load_pickle`` for bytes already in memory."""
    return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()


def safe_load_pickle(path: str | os.PathLike, encoding: str = "latin1") -> Any:
    """Load a data pickle without executing code from it.

    Raises ``UnsafePickleError`` (a ``pickle.UnpicklingError`` and ``ValueError``) naming the first
    refused global, ``FileNotFoundError`` for a missing file, and ``DataFormatError`` for a file
    that is not a readable pickle.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    with open(p, "rb") as f:
        try:
            return SafeUnpickler(f, encoding=encoding).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{p}: {e}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, UnicodeDecodeError, MemoryError) as e:
            raise DataFormatError(f"{p} is not a readable pickle ({type(e).__name__}: {e})") from e


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
        if not np.issubdtype(np.asarray(a).dtype, np.number):
            raise DataFormatError(f"{p}: '{k}' must be numeric, got dtype {np.asarray(a).dtype}")
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
