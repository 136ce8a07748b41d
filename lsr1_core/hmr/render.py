"""Offscreen rendering of body meshes from a sample's camera (pyrender over EGL; Mesa's llvmpipe on a CPU).

    from lsr1_core.hmr.render import render_mesh, RenderUnavailable
    out = render_mesh(vertices_cam, faces, color=(1.0, 0.75, 0.85))   # vertices in camera coordinates
    out.rgba            # (256, 256, 4) uint8, transparent where the body is not
    out.mask            # (256, 256) bool, the body's silhouette

Coordinates: the vertices are in the pipeline's camera coordinates (``data.to_camera``: x right in the
image, y down, z forward, metres) and the camera is the pinhole of ``CameraConfig`` (focal length in
pixels, principal point at the image centre), so a vertex lands on the pixel ``data.project`` gives it
(pixel (u, v) = column u, row v; the pixel centres are at half-integers). ``window=(u0, v0, size)`` renders
the square of image pixels [u0, u0 + size] × [v0, v0 + size] instead of the whole image, at ``resolution``
pixels a side (the same camera, its principal point shifted and its focal length scaled): a body that reaches
past the virtual image's border is not cut off, and a zoomed view keeps its detail (:func:`framing_window`
chooses a window around the projected meshes).

Every OpenGL call runs on one worker thread that owns the EGL context: Streamlit runs each script run on
a thread of its own, and an EGL context cannot be current on two threads. When pyrender, PyOpenGL or EGL
is missing or fails (no libEGL, no render node, a headless machine without Mesa), the functions raise
:class:`RenderUnavailable` with the reason; the failure is remembered, so callers can ask
:func:`render_status` once and fall back without paying for the failed start again. Setting the
environment variable ``LSR1_NO_RENDER=1`` disables rendering (to exercise the fallback). ``LP_NUM_THREADS`` defaults to 0 here (llvmpipe renders
on the calling thread), unless already set.
"""
from __future__ import annotations

import base64
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import LSR1Error
from .data import CameraConfig

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
# Mesa's llvmpipe: rasterize on the calling thread. A 256² image is too small for its worker threads to
# pay off, and beside other CPU work they cost more (measured 45 ms a body mesh with 0, 65–75 ms default).
os.environ.setdefault("LP_NUM_THREADS", "0")


class RenderUnavailable(LSR1Error):
    """Offscreen rendering cannot run here (pyrender/EGL missing or failing)."""


@dataclass
class Rendered:
    rgba: np.ndarray  # (H, W, 4) uint8; alpha 0 off the body (or the background colour, if one was given)
    mask: np.ndarray  # (H, W) bool; True where a mesh covers the pixel

    def png(self) -> bytes:
        """The RGBA image as PNG bytes."""
        from PIL import Image  # optional (with pyrender): only when an image is encoded
        buf = io.BytesIO()
        Image.fromarray(self.rgba, "RGBA").save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png()).decode("ascii")


_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsr1-render")
_LOCK = threading.Lock()
_STATE: dict = {}  # on the worker thread: "renderer", "size"; everywhere: "error"


def _disabled_reason() -> str | None:
    if os.environ.get("LSR1_NO_RENDER", "").strip() not in ("", "0"):
        return "offscreen rendering is disabled (the environment variable LSR1_NO_RENDER is set)"
    return None


def _renderer(size: int):
    """The worker thread's OffscreenRenderer (created on first use, resized when needed)."""
    if "error" in _STATE:
        raise RenderUnavailable(_STATE["error"])
    r = _STATE.get("renderer")
    if r is not None and _STATE.get("size") == size:
        return r
    try:
        import pyrender  # optional and slow (OpenGL/EGL start-up): a missing one is RenderUnavailable
        if r is not None:
            r.delete()
            _STATE.pop("renderer", None)
        r = pyrender.OffscreenRenderer(size, size)
    except Exception as e:  # noqa: BLE001 - any import/EGL/GL failure means "no rendering here"
        platform = os.environ.get("PYOPENGL_PLATFORM", "")
        _STATE["error"] = (f"offscreen rendering is unavailable: pyrender could not open an OpenGL context "
                           f"(PYOPENGL_PLATFORM={platform!r}): {type(e).__name__}: {e}".rstrip(": "))
        raise RenderUnavailable(_STATE["error"]) from None
    _STATE["renderer"], _STATE["size"] = r, size
    return r


def framing_window(vertices, camera: CameraConfig = CameraConfig(), points=None, margin: float = 0.08,
                   min_size: float = 24.0) -> tuple[float, float, float]:
    """A square window (u0, v0, size) in image pixels holding every vertex of ``vertices`` (one (V, 3) array or
    several, camera coordinates) as projected by ``camera``, and the 2-D ``points`` (N, 2) if given, with
    ``margin`` (a fraction of the size) on each side."""
    arrays = [vertices] if isinstance(vertices, np.ndarray) and vertices.ndim == 2 else list(vertices)
    uv = []
    for v in arrays:
        v = np.asarray(v, dtype=np.float64)
        z = np.maximum(v[:, 2:3], 1e-3)
        uv.append(camera.focal * v[:, :2] / z + camera.image_size / 2)
    if points is not None and len(points):
        uv.append(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    if not uv:
        return 0.0, 0.0, float(camera.image_size)
    pts = np.concatenate(uv)
    lo, hi = pts.min(0), pts.max(0)
    centre, size = (lo + hi) / 2, max(float((hi - lo).max()) * (1 + 2 * margin), min_size)
    return float(centre[0] - size / 2), float(centre[1] - size / 2), float(size)


def _scene(meshes, camera: CameraConfig, background, window=None, resolution: int | None = None):
    import pyrender  # optional, see _renderer
    import trimesh  # optional, with pyrender
    bg = [0.0, 0.0, 0.0, 0.0] if background is None else [*background[:3], 1.0]
    scene = pyrender.Scene(bg_color=bg, ambient_light=[0.25, 0.25, 0.25])
    flip = np.array([1.0, -1.0, -1.0], dtype=np.float32)  # camera coords (OpenCV) → OpenGL (y up, looks along −z)
    for verts, faces, color in meshes:
        v = np.asarray(verts, dtype=np.float32) * flip
        tm = trimesh.Trimesh(vertices=v, faces=np.asarray(faces, dtype=np.int64), process=False)
        mat = pyrender.MetallicRoughnessMaterial(baseColorFactor=[*map(float, color[:3]), 1.0], metallicFactor=0.0,
                                                 roughnessFactor=0.7, doubleSided=True)
        scene.add(pyrender.Mesh.from_trimesh(tm, material=mat, smooth=True))
    c = camera.image_size / 2.0
    u0, v0, size = window or (0.0, 0.0, float(camera.image_size))
    k = (resolution or camera.image_size) / size  # output pixels per image pixel
    cam = pyrender.IntrinsicsCamera(fx=camera.focal * k, fy=camera.focal * k, cx=(c - u0) * k, cy=(c - v0) * k,
                                    znear=0.05, zfar=100.0)
    scene.add(cam, pose=np.eye(4))
    # a key light from the camera and a fill light from above-left
    scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=1.4), pose=np.eye(4))
    fill = np.eye(4)
    a = np.deg2rad(-40.0)
    fill[:3, :3] = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=0.7), pose=fill)
    return scene


def _render_on_worker(meshes, camera: CameraConfig, background, window=None, resolution=None) -> Rendered:
    r = _renderer(resolution or camera.image_size)  # first: a failing import of pyrender → RenderUnavailable
    import pyrender  # optional, see _renderer
    scene = _scene(meshes, camera, background, window, resolution)
    color, depth = r.render(scene, flags=pyrender.RenderFlags.RGBA)
    mask = depth > 0
    rgba = np.array(color, dtype=np.uint8, copy=True)
    if background is None:
        rgba[..., 3] = np.where(mask, 255, 0).astype(np.uint8)
    return Rendered(rgba=rgba, mask=mask)


def render_meshes(meshes, camera: CameraConfig = CameraConfig(), background=None, window=None,
                  resolution: int | None = None) -> Rendered:
    """Render several meshes into one image. ``meshes``: iterable of (vertices (V, 3) in camera coordinates,
    faces (F, 3), RGB colour in [0, 1]). ``background``: None for a transparent background, else an RGB
    colour in [0, 1] (opaque). ``window`` (u0, v0, size) in image pixels and ``resolution``: see the module
    docstring (default: the whole image at its own size). Raises :class:`RenderUnavailable` when offscreen
    rendering cannot run."""
    reason = _disabled_reason()
    if reason:
        raise RenderUnavailable(reason)
    meshes = [(np.asarray(v), np.asarray(f), tuple(c)) for v, f, c in meshes]
    for v, f, _ in meshes:
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"a mesh needs (V, 3) vertices and (F, 3) faces, got {v.shape} and {f.shape}")
    if window is not None and not (len(window) == 3 and float(window[2]) > 0):
        raise ValueError(f"window must be (u0, v0, size) with size > 0, got {window!r}")
    with _LOCK:
        return _EXECUTOR.submit(_render_on_worker, meshes, camera, background, window, resolution).result()


def render_mesh(vertices, faces, color=(0.95, 0.95, 0.95), camera: CameraConfig = CameraConfig(),
                background=None, window=None, resolution: int | None = None) -> Rendered:
    """Render one mesh (vertices in camera coordinates) from the sample's camera; see :func:`render_meshes`."""
    return render_meshes([(vertices, faces, color)], camera, background, window, resolution)


def render_status() -> str | None:
    """None when offscreen rendering works here, else the reason it does not (tries once, remembers)."""
    reason = _disabled_reason()
    if reason:
        return reason
    if "error" in _STATE:
        return _STATE["error"]
    if _STATE.get("renderer") is not None:
        return None
    try:
        with _LOCK:
            _EXECUTOR.submit(_renderer, CameraConfig().image_size).result()
    except RenderUnavailable as e:
        return str(e)
    return None
