"""A small, structurally valid SMPL model pickle for tests (SMPL itself may not be redistributed, and official
pickles need chumpy): ``write_tiny_smpl_fixture``, and ``fake_chumpy_modules``, importable stand-ins for
chumpy's classes so that ``pickle.dump`` can write references to them."""
from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr1_core.hmr.smpl import FACE_VERTEX_KEYS, SMPL_PARENTS

# Rest joint positions (metres, y up, +x = the body's left), roughly SMPL's neutral T-pose.
_REST_JOINTS = np.array([
    [0.00, 0.00, 0.00], [0.06, -0.09, -0.01], [-0.06, -0.09, -0.01], [0.00, 0.11, -0.03],
    [0.10, -0.47, 0.00], [-0.10, -0.47, 0.00], [0.00, 0.25, 0.00], [0.09, -0.87, -0.04],
    [-0.09, -0.87, -0.04], [0.00, 0.31, 0.02], [0.12, -0.93, 0.08], [-0.12, -0.93, 0.08],
    [0.00, 0.52, -0.01], [0.08, 0.42, -0.01], [-0.08, 0.42, -0.01], [0.00, 0.60, 0.04],
    [0.17, 0.46, -0.02], [-0.17, 0.46, -0.02], [0.43, 0.44, -0.04], [-0.43, 0.44, -0.04],
    [0.68, 0.45, -0.04], [-0.68, 0.45, -0.04], [0.76, 0.44, -0.05], [-0.76, 0.44, -0.05],
])
# Face keypoint vertices (nose, right eye, left eye, right ear, left ear), skinned to the head.
_FACE_POINTS = np.array([[0.00, 0.62, 0.12], [-0.03, 0.66, 0.10], [0.03, 0.66, 0.10],
                         [-0.07, 0.63, 0.00], [0.07, 0.63, 0.00]])


@contextlib.contextmanager
def fake_chumpy_modules():
    """Importable ``chumpy.ch.Ch`` / ``chumpy.reordering.Select`` stand-ins, only so that
    ``pickle.dump`` can write references to them (as official SMPL / MANO pickles hold)."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "chumpy.reordering")}
    root, ch, reo = (types.ModuleType(n) for n in ("chumpy", "chumpy.ch", "chumpy.reordering"))

    class Ch:  # state layout of chumpy.ch.Ch.__getstate__
        def __init__(self, x):
            self.__dict__.update({"x": np.asarray(x, dtype=np.float64), "_dirty_vars": set(),
                                  "_itr": None, "_depends_on_deps": {}, "_make_dense": False,
                                  "_make_sparse": False})

    class Select:
        def __init__(self, a, idxs, preferred_shape):
            self.__dict__.update({"a": a, "idxs": np.asarray(idxs), "preferred_shape": tuple(preferred_shape),
                                  "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}})

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    ch.Ch, reo.Select, root.ch, root.reordering = Ch, Select, ch, reo
    sys.modules.update({"chumpy": root, "chumpy.ch": ch, "chumpy.reordering": reo})
    try:
        yield Ch, Select
    finally:
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m


def write_tiny_smpl_fixture(path: str | os.PathLike, n_vertices: int = 24 * 6 + 5, seed: int = 0,
                            n_betas: int = 10, chumpy: bool = False) -> Path:
    """Write a small, structurally valid SMPL model pickle (protocol 2) for tests.

    24 joints at SMPL-like rest positions; each joint has a cluster of vertices around it (its
    J_regressor row averages them, so the regressed joint is exactly the rest joint), skinned 0.8
    to the joint and 0.2 to its parent; five extra vertices for the nose, eyes and ears are
    skinned to the head and listed under a non-standard ``vertex_ids`` key, which ``SMPLBody``
    honours. shapedirs: β0 stretches the body vertically, β1 widens it, the others are small
    random offsets; posedirs are small random correctives. With ``chumpy=True`` v_template,
    weights and posedirs are written as ``chumpy.ch.Ch`` objects and shapedirs as a
    ``chumpy.reordering.Select`` over a Ch, as official SMPL / MANO pickles store them.
    Returns the path.
    """
    n_face = len(_FACE_POINTS)
    m = (n_vertices - n_face) // 24
    if m < 3:
        raise ValueError(f"n_vertices must be at least {24 * 3 + n_face} (3 per joint + 5 face vertices)")
    rng = np.random.default_rng(seed)
    parents = np.array(SMPL_PARENTS)
    counts = np.full(24, m)
    counts[0] += (n_vertices - n_face) - 24 * m  # leftovers to the pelvis
    verts, owner = [], []
    for j in range(24):
        off = rng.normal(scale=0.03, size=(counts[j], 3))
        off -= off.mean(0)  # the cluster's mean is exactly the joint
        verts.append(_REST_JOINTS[j] + off)
        owner += [j] * counts[j]
    verts.append(_FACE_POINTS)
    owner += [15] * n_face
    v = np.concatenate(verts)
    owner = np.array(owner)
    V = v.shape[0]
    assert V == n_vertices
    weights = np.zeros((V, 24))
    for i, j in enumerate(owner):
        if i >= V - n_face or j == 0:
            weights[i, j] = 1.0
        else:
            weights[i, j], weights[i, parents[j]] = 0.8, 0.2
    jr = np.zeros((24, V))
    start = 0
    for j in range(24):
        jr[j, start:start + counts[j]] = 1.0 / counts[j]
        start += counts[j]
    shapedirs = rng.normal(scale=0.005, size=(V, 3, n_betas))
    shapedirs[:, 1, 0] = 0.1 * v[:, 1]
    if n_betas > 1:
        shapedirs[:, 0, 1] = 0.1 * v[:, 0]
    posedirs = rng.normal(scale=0.001, size=(V, 3, 207))
    faces = []
    start = 0
    for j in range(24):
        idx = list(range(start, start + counts[j]))
        faces += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
        start += counts[j]
    face_ids = list(range(V - n_face, V))
    faces.append([face_ids[0], face_ids[1], face_ids[2]])
    faces.append([face_ids[0], face_ids[3], face_ids[4]])
    kintree = np.stack([np.where(parents < 0, 4294967295, parents), np.arange(24)]).astype(np.int64)
    model = {
        "v_template": v, "shapedirs": shapedirs, "posedirs": posedirs,
        "J_regressor": sp.csc_matrix(jr), "weights": weights, "kintree_table": kintree,
        "f": np.array(faces, dtype=np.uint32), "J": _REST_JOINTS.copy(),
        "bs_style": "lbs", "bs_type": "lrotmin",
        "vertex_ids": dict(zip(FACE_VERTEX_KEYS, face_ids)),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if chumpy:
        with fake_chumpy_modules() as (Ch, Select):
            model["v_template"] = Ch(v)
            model["weights"] = Ch(weights)
            model["posedirs"] = Ch(posedirs)
            wide = np.concatenate([shapedirs, rng.normal(size=(V, 3, 2))], 2)  # Select drops 2 columns
            idxs = np.arange(wide.size).reshape(wide.shape)[:, :, :n_betas].ravel()
            model["shapedirs"] = Select(Ch(wide), idxs, shapedirs.shape)
            with open(path, "wb") as fh:
                pickle.dump(model, fh, protocol=2)
    else:
        with open(path, "wb") as fh:
            pickle.dump(model, fh, protocol=2)
    return path
