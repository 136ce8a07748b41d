"""Text exports of the HMR page: meshes as OBJ or PLY, per-step metrics as CSV.

    obj_text({"L-SR1": (V, F), "LGD": (V, F)})      # one OBJ, one object per mesh
    ply_text(V, F)                                 # one ASCII PLY
    meshes_ply_zip({"L-SR1": (V, F), ...})         # a zip of one PLY per mesh
    metrics_csv({"lsr1": curves, "lgd": curves})   # curves: {"reproj": [...], "mpjpe": [...], ...} per step
    mesh_download({"lsr1": (V, F)}, "OBJ", step, "test-3")   # the page's download: labelled, with a note

Vertices are written with 6 decimals (micrometres), faces 1-based in OBJ and 0-based in PLY.
"""
from __future__ import annotations

import csv
import io
import re
import zipfile

import numpy as np

from lsr1_core.hmr.compare import LABELS
from lsr1_core.hmr.data import CameraConfig

# per-step metric → CSV column (units in the name)
METRIC_COLUMNS = {"reproj": "reproj_px", "mpjpe": "mpjpe_mm", "pa_mpjpe": "pa_mpjpe_mm", "f": "objective"}


def _arrays(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices outside [0, {len(v)})")
    if not np.isfinite(v).all():
        raise ValueError("vertices must be finite")
    return v, f


def _lines(fmt: str, arr: np.ndarray) -> str:
    if not len(arr):
        return ""
    buf = io.StringIO()
    np.savetxt(buf, arr, fmt=fmt)
    return buf.getvalue()


def _comment_lines(comment: str | None, prefix: str) -> str:
    return "".join(f"{prefix}{line}\n" for line in (comment or "").splitlines())


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "mesh"


def obj_text(meshes: dict, comment: str | None = None) -> str:
    """Wavefront OBJ with one ``o`` object per entry of ``meshes`` (name → (vertices, faces))."""
    out = [_comment_lines(comment, "# ")]
    base = 0
    for name, (vertices, faces) in meshes.items():
        v, f = _arrays(vertices, faces)
        out.append(f"o {_safe_name(name)}\n")
        out.append(_lines("v %.6f %.6f %.6f", v))
        out.append(_lines("f %d %d %d", f + 1 + base))
        base += len(v)
    return "".join(out)


def ply_text(vertices, faces, comment: str | None = None) -> str:
    """ASCII PLY of one triangle mesh."""
    v, f = _arrays(vertices, faces)
    head = ["ply", "format ascii 1.0"]
    head += [f"comment {line}" for line in (comment or "").splitlines()]
    head += [f"element vertex {len(v)}", "property float x", "property float y", "property float z",
             f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    tri = np.concatenate([np.full((len(f), 1), 3, dtype=np.int64), f], 1)
    return "\n".join(head) + "\n" + _lines("%.6f %.6f %.6f", v) + _lines("%d %d %d %d", tri)


def meshes_ply_zip(meshes: dict, comment: str | None = None) -> bytes:
    """A zip holding one ``<name>.ply`` per mesh (PLY has no objects)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, (vertices, faces) in meshes.items():
            z.writestr(f"{_safe_name(name)}.ply", ply_text(vertices, faces, comment))
    return buf.getvalue()


def metrics_csv(curves: dict, labels: dict | None = None) -> str:
    """Long-format CSV: one row per (method, step) with every metric of ``curves[method]``
    (``reproj`` px, ``mpjpe`` / ``pa_mpjpe`` mm, ``f`` the fitting objective)."""
    labels = labels or {}
    keys = [k for k in METRIC_COLUMNS if any(k in c for c in curves.values())]
    extra = sorted({k for c in curves.values() for k in c} - set(keys))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "label", "step"] + [METRIC_COLUMNS[k] for k in keys] + extra)
    for name, c in curves.items():
        n = max((len(v) for v in c.values()), default=0)
        for k in range(n):
            row = [name, labels.get(name, name), k]
            for key in keys + extra:
                vals = c.get(key, [])
                row.append(f"{float(vals[k]):.6g}" if k < len(vals) else "")
            w.writerow(row)
    return buf.getvalue()


EXPORT_NOTE = ("L-SR1 Explorer HMR page: {what} at inner iteration {step}, sample {sample}\n"
               "camera coordinates in metres: x right in the image, y down, z forward (focal {focal:g} px, "
               "{size}x{size} px image, principal point at the centre)")


def mesh_download(meshes: dict, fmt: str, step: int, sample: str, camera: CameraConfig = CameraConfig()) -> str | bytes:
    """Meshes by method name (``compare.LABELS``: lsr1, lgd, …, gt) → one OBJ (``fmt="OBJ"``) or a zip of PLY
    files, each object named by its method's label, with a note of the step, the sample and the coordinates."""
    named = {LABELS.get(k, k): v for k, v in meshes.items()}
    note = EXPORT_NOTE.format(what=", ".join(named), step=step, sample=sample, focal=camera.focal,
                              size=camera.image_size)
    return obj_text(named, note) if fmt == "OBJ" else meshes_ply_zip(named, note)
