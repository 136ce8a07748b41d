"""Human mesh recovery: step through mesh refinements and compare L-SR1 with LGD (paper Figures 5 and 9).

A sample (2-D keypoints in a 256 × 256 virtual image) is fitted once by every chosen method from the same
initialization; the step control then moves all of them through their inner iterations together. Per step
the page skins only the current meshes (one batched call) and renders them offscreen; the fits, the curves
and each visited step are cached.

Checkpoints: the shipped ones (pretrained/hmr_*.json) and the best checkpoints of HMR training runs found
under ``runs/`` (or the folders listed in the environment variable ``LSR1_HMR_RUNS``, separated by ``:``).
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from explorer.component_files import plain_figure

ROOT = Path(__file__).resolve().parents[2]
IMAGE = 256  # the virtual image's size in pixels (CameraConfig().image_size)

BODY_ANNY = "Anny (embedded)"
BODY_SMPL = "SMPL (from LSR1_SMPL_MODEL)"
# learned method slots: name → (label, checkpoint method)
SLOTS = {"lsr1": ("L-SR1", "lsr1"), "lgd": ("LGD", "lgd"), "lsr1_nosec": ("L-SR1 (no secant)", "lsr1")}
CLASSICAL = {"adam": "Adam", "lbfgs": "L-BFGS"}
LABELS = {**{k: v[0] for k, v in SLOTS.items()}, **CLASSICAL, "gt": "Ground truth"}
ORDER = ("lsr1", "lgd", "lsr1_nosec", "adam", "lbfgs")
# meshes: L-SR1 white and LGD pink as in the paper
MESH_RGB = {"lsr1": (0.95, 0.95, 0.95), "lgd": (1.0, 0.56, 0.76), "lsr1_nosec": (0.62, 0.85, 0.92),
            "adam": (0.65, 0.86, 0.63), "lbfgs": (0.99, 0.75, 0.53), "gt": (0.99, 0.84, 0.31)}
# curves (on white): L-SR1 blue and LGD pink, as in docs/figures/hmr_curves.png
LINE = {"lsr1": "#1f77b4", "lgd": "#e377c2", "lsr1_nosec": "#17becf", "adam": "#2ca02c", "lbfgs": "#ff7f0e"}
CANVAS_BG = "#2b2f36"
NONE = "none"
# OpenPose COCO-18 limbs
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
SPACING = 1.9  # metres between the meshes in the 3-D view
METRICS = (("reproj", "2-D reprojection error (px)"), ("mpjpe", "MPJPE (mm)"), ("pa_mpjpe", "PA-MPJPE (mm)"))


@st.cache_resource(show_spinner=False)
def _thread_state() -> dict:
    import threading
    return {"lock": threading.Lock(), "depth": 0, "before": None}


@contextmanager
def one_thread():
    """Run torch on one thread here: a single sample's fit is made of small operations, for which
    intra-op threads cost more than they give, and far more when other processes load the CPU
    (measured on 2 cores beside meta-training: 1.1 s with one thread, 13–19 s with two). The setting is
    process-wide: the first of overlapping users (page runs, the prefetcher) sets it, the last restores it."""
    state = _thread_state()
    with state["lock"]:
        if state["depth"] == 0:
            state["before"] = torch.get_num_threads()
            torch.set_num_threads(1)
        state["depth"] += 1
    try:
        yield
    finally:
        with state["lock"]:
            state["depth"] -= 1
            if state["depth"] == 0:
                torch.set_num_threads(state["before"])


def to_camera(x: torch.Tensor, body) -> torch.Tensor:
    """World → the pipeline's camera coordinates, with the body model's own world frame when the
    library's ``to_camera`` takes one (it gained the ``body`` argument with SMPL support)."""
    import inspect

    from lsr1_core.hmr import CameraConfig
    from lsr1_core.hmr.data import to_camera as _tc
    if "body" in inspect.signature(_tc).parameters:
        return _tc(x, CameraConfig(), body)
    return _tc(x, CameraConfig())


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb[:3])


# --- body models, samples, checkpoints -------------------------------------------------------------
def smpl_available() -> bool:
    return (ROOT / "lsr1_core" / "hmr" / "smpl.py").exists()


@st.cache_resource(show_spinner="building the body model…")
@one_thread()
def get_body(kind: str, smpl_path: str = ""):
    """The body model (raises BodyModelError with the reason when it cannot be loaded)."""
    if kind == "smpl":
        from lsr1_core.hmr.smpl import SMPLBody
        return SMPLBody(smpl_path or None)
    from lsr1_core.hmr import AnnyBody
    return AnnyBody()


@st.cache_resource(show_spinner="building the test set…")
@one_thread()
def shipped_test_set():
    from lsr1_core.hmr import test_set
    return test_set(get_body("anny"))


@st.cache_resource(max_entries=64, show_spinner=False)
@one_thread()
def random_sample(seed: int):
    """A new sample from the held-out clips (the test set's noise and drop rate), reproducible by its seed."""
    from lsr1_core.hmr import CameraConfig, PoseSampler, make_batch
    from lsr1_core.hmr.data import SampleConfig
    anny = get_body("anny")
    gen = torch.Generator().manual_seed(int(seed))
    pose, shape = PoseSampler(anny, "test", jitter=0.0).draw(1, gen)
    return make_batch(anny, pose, shape, gen, CameraConfig(), SampleConfig(noise=0.01))


def sample_batch(sample_key: tuple):
    """("test", index) or ("random", seed) → an HMRBatch of one sample (always made with the Anny body)."""
    kind, value = sample_key
    if kind == "test":
        return shipped_test_set().subset(slice(int(value), int(value) + 1))
    return random_sample(int(value))


def hmr_roots() -> list[Path]:
    env = os.environ.get("LSR1_HMR_RUNS", "")
    return [Path(p) for p in env.split(os.pathsep) if p] if env else [ROOT / "runs"]


def _card_entry(card_path: Path, label: str, shipped_slot: str | None = None) -> dict | None:
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if card.get("kind") != "hmr":
        return None
    tc = card.get("train_config") or {}
    if tc.get("stage") == "initializer":
        return None  # an initializer run: its update modules are untrained
    method = (card.get("config") or {}).get("method")
    slot = shipped_slot or ("lgd" if method == "lgd" else
                            "lsr1_nosec" if float(tc.get("secant_weight", 1.0) or 0.0) == 0.0 else "lsr1")
    body = card.get("body") or {}
    return {"label": label, "path": str(card_path.with_suffix("")), "method": method, "slot": slot,
            "iterations": card.get("iterations"), "body": body.get("body_model"),
            "mtime": card_path.stat().st_mtime_ns}


@st.cache_data(ttl=20, show_spinner=False)
def discover_checkpoints(roots: tuple[str, ...]) -> list[dict]:
    """Shipped HMR checkpoints first, then the best checkpoints of HMR runs under ``roots``."""
    from lsr1_core.hmr import PRETRAINED_DIR, PRETRAINED_HMR
    out = []
    for slot, stem in PRETRAINED_HMR.items():
        card = PRETRAINED_DIR / f"{stem}.json"
        if card.exists():
            e = _card_entry(card, f"shipped: {stem}", slot)
            if e:
                out.append(e)
    seen = {e["label"] for e in out}
    for root in map(Path, roots):
        runs = [root] if (root / "best.json").exists() else (sorted(p for p in root.iterdir() if p.is_dir())
                                                               if root.is_dir() else [])
        for run in runs:
            label = f"run: {run.name}"
            if label in seen:
                label = f"run: {run}"
            e = _card_entry(run / "best.json", label)
            if e:
                out.append(e)
                seen.add(label)
    return out


@st.cache_resource(max_entries=16, show_spinner="loading the checkpoint…")
def load_model(path: str, mtime: int, body_key: tuple):
    """(model, None) or (None, the reason it cannot be used with this body model)."""
    from lsr1_core.errors import LSR1Error
    from lsr1_core.hmr.models import load_hmr_model
    try:
        return load_hmr_model(path, get_body(*body_key))[0], None
    except LSR1Error as e:
        return None, str(e)


# --- fitting -------------------------------------------------------------------------------------
@st.cache_data(max_entries=32, show_spinner=False)
@one_thread()
def fit_sample(body_key: tuple, sample_key: tuple, ckpt_key: tuple, classical: tuple, steps: int,
               _models: dict) -> dict:
    """Every method's estimates at steps 0…steps and its per-step curves (numpy, cached per sample)."""
    from lsr1_core.hmr import CameraConfig, curves_of, run_methods
    from lsr1_core.hmr.models import HMRObjective, classical_fit
    t0 = time.perf_counter()
    body = get_body(*body_key)
    b = sample_batch(sample_key)
    obj = HMRObjective(body, b.kp2d, b.conf, CameraConfig())
    if _models:
        init = "lsr1" if "lsr1" in _models else None
        fits = run_methods(body, b, _models, steps, classical=classical, init_model=init)
        start = init or next(iter(_models))
    else:  # no learned method: classical fitting from the rest pose
        pose0, shape0 = torch.zeros(1, body.pose_dim), body.default_shape(1).float()
        fits = {c: classical_fit(c, obj, pose0, shape0, steps) for c in classical}
        start = None
    out = {"poses": {}, "shapes": {}, "curves": {}, "start": start}
    for name in [n for n in ORDER if n in fits]:
        r = fits[name]
        out["poses"][name] = torch.cat(r.poses).float().numpy()
        out["shapes"][name] = torch.cat(r.shapes).float().numpy()
        out["curves"][name] = curves_of(body, b, obj, r)
    out["seconds"] = time.perf_counter() - t0
    return out


@st.cache_data(max_entries=16, show_spinner=False)
@one_thread()
def gt_vertices(sample_key: tuple) -> np.ndarray:
    anny, b = get_body("anny"), sample_batch(sample_key)
    with torch.no_grad():
        return to_camera(anny.vertices(b.pose, b.shape).float(), anny)[0].numpy().astype(np.float32)


@one_thread()
def meshes_at(body, fit: dict, step: int, names) -> dict[str, np.ndarray]:
    """Camera-coordinate float32 vertices of the named methods at ``step`` (one batched skinning call)."""
    names = [n for n in names if n in fit["poses"]]
    if not names:
        return {}
    P = torch.from_numpy(np.stack([fit["poses"][n][step] for n in names]))
    S = torch.from_numpy(np.stack([fit["shapes"][n][step] for n in names]))
    with torch.no_grad():
        V = to_camera(body.vertices(P, S).float(), body).numpy().astype(np.float32)
    return dict(zip(names, V))


@st.cache_resource(show_spinner=False)
def faces_of(body_key: tuple) -> np.ndarray:
    return get_body(*body_key).faces.cpu().numpy().astype(np.int32)


@st.cache_resource(show_spinner=False)
def anny_faces() -> np.ndarray:
    return get_body("anny").faces.cpu().numpy().astype(np.int32)


class StepCache:
    """Per-step meshes and rendered images, shared by the page's runs and a one-thread prefetcher that
    prepares the neighbouring steps after a step is shown, so that stepping by one finds them ready.
    A request for something the prefetcher is computing waits for it instead of computing it again."""

    def __init__(self, max_meshes: int = 64, max_images: int = 512):
        import threading
        from collections import OrderedDict
        from concurrent.futures import ThreadPoolExecutor
        self.lock = threading.Lock()
        self.store = {"meshes": OrderedDict(), "images": OrderedDict()}
        self.cap = {"meshes": max_meshes, "images": max_images}
        self.pending: dict = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsr1-hmr-prefetch")
        self.generation = 0

    def _get_or_compute(self, kind: str, key, compute):
        from concurrent.futures import Future
        d = self.store[kind]
        with self.lock:
            if key in d:
                d.move_to_end(key)
                return d[key]
            fut = self.pending.get((kind, key))
            owner = fut is None
            if owner:
                fut = self.pending[(kind, key)] = Future()
        if not owner:
            return fut.result()
        try:
            value = compute()
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            with self.lock:
                self.pending.pop((kind, key), None)
        with self.lock:
            d[key] = value
            while len(d) > self.cap[kind]:
                d.popitem(last=False)
        fut.set_result(value)
        return value

    def meshes(self, body, key: tuple, fit: dict, step: int, names: tuple) -> dict[str, np.ndarray]:
        return self._get_or_compute("meshes", (key, step, names), lambda: meshes_at(body, fit, step, names))

    def image(self, key: tuple, verts: np.ndarray, faces: np.ndarray, rgb: tuple) -> str:
        """PNG data URI of one mesh rendered from the sample's camera (transparent background)."""
        from lsr1_core.hmr.render import render_mesh
        return self._get_or_compute("images", key, lambda: render_mesh(verts, faces, rgb).data_uri())

    def prefetch(self, body, key: tuple, fit: dict, steps, names: tuple, faces: np.ndarray, render: bool) -> None:
        """Prepare ``steps`` in the background; a newer call abandons an older one's remaining work."""
        with self.lock:
            self.generation += 1
            gen = self.generation

        def job():
            for s in steps:
                if gen != self.generation:
                    return
                try:
                    verts = self.meshes(body, key, fit, s, names)
                    for n in names if render else ():
                        if gen != self.generation:
                            return
                        self.image((key, s, n), verts[n], faces, MESH_RGB[n])
                except Exception:  # noqa: BLE001 - a failed prefetch is only a missed cache entry
                    return
        self.pool.submit(job)


@st.cache_resource(show_spinner=False)
def step_cache() -> StepCache:
    return StepCache()


def render_problem() -> str | None:
    from lsr1_core.hmr.render import render_status
    return render_status()


# --- figures -------------------------------------------------------------------------------------
def _canvas_axes(fig, row=None, col=None):
    kw = {} if row is None else {"row": row, "col": col}
    fig.update_xaxes(range=[0, IMAGE], showgrid=False, zeroline=False, showticklabels=False, constrain="domain",
                     **kw)
    fig.update_yaxes(range=[IMAGE, 0], showgrid=False, zeroline=False, showticklabels=False, constrain="domain",
                     **kw)


def _keypoint_traces(kp2d: np.ndarray, conf: np.ndarray, missing_uv: np.ndarray | None, legend: bool = True):
    from lsr1_core.hmr import COCO18
    vis = conf > 0
    xs, ys = [], []
    for a, b in LIMBS:
        if vis[a] and vis[b]:
            xs += [float(kp2d[a, 0]), float(kp2d[b, 0]), None]
            ys += [float(kp2d[a, 1]), float(kp2d[b, 1]), None]
    traces = [go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(255,255,255,0.55)", width=2),
                         hoverinfo="skip", name="skeleton", showlegend=False),
              go.Scatter(x=kp2d[vis, 0].astype(float), y=kp2d[vis, 1].astype(float), mode="markers",
                         marker=dict(size=7, color="#ffd400", line=dict(color="#000", width=1)),
                         text=[n for n, v in zip(COCO18, vis) if v], hovertemplate="%{text}: (%{x:.1f}, %{y:.1f})",
                         name="observed keypoints", showlegend=legend)]
    if missing_uv is not None and (~vis).any():
        traces.append(go.Scatter(x=missing_uv[~vis, 0].astype(float), y=missing_uv[~vis, 1].astype(float),
                                 mode="markers", marker=dict(size=9, symbol="x-thin-open", color="#ff4b4b",
                                                             line=dict(color="#ff4b4b", width=2)),
                                 text=[n for n, v in zip(COCO18, vis) if not v],
                                 hovertemplate="%{text} (missing; true position)",
                                 name="missing (true position, not observed)", showlegend=legend))
    return traces


def keypoint_figure(kp2d: np.ndarray, conf: np.ndarray, missing_uv: np.ndarray | None) -> go.Figure:
    """The sample's observed keypoints on a canvas the size of the virtual image (pixels, y down)."""
    fig = go.Figure(_keypoint_traces(kp2d, conf, missing_uv))
    _canvas_axes(fig)
    fig.update_layout(width=340, height=400, margin=dict(l=6, r=6, t=30, b=6), plot_bgcolor=CANVAS_BG,
                      title=dict(text=f"keypoints ({IMAGE}×{IMAGE} px image)", font=dict(size=13)),
                      legend=dict(orientation="h", y=-0.02, yanchor="top", font=dict(size=10)))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


MESH_LIGHTING = dict(ambient=0.55, diffuse=0.85, specular=0.05, roughness=0.9, fresnel=0.05)
MESH_LIGHT_POSITION = dict(x=-3e4, y=-1e5, z=6e4)


def display_coords(v_cam: np.ndarray, slot: int) -> np.ndarray:
    """(3, V) float32 coordinates of the 3-D view: x = image right (+ the mesh's slot offset), y = depth
    about the body's root (away from the camera), z = image up; metres."""
    from lsr1_core.hmr import CameraConfig
    v = np.asarray(v_cam, dtype=np.float32)
    return np.stack([v[:, 0] + np.float32(slot * SPACING), v[:, 2] - np.float32(CameraConfig().distance),
                     -v[:, 1]]).astype(np.float32)


def mesh3d_layout(names: list[str], step: int) -> dict:
    n = max(len(names), 1)
    lo, hi = -SPACING / 2, (n - 0.5) * SPACING
    axis = dict(visible=False, showbackground=False)
    return dict(
        height=460, margin=dict(l=0, r=0, t=30, b=0), paper_bgcolor=CANVAS_BG, showlegend=False,
        title=dict(text=f"meshes at step {step} (drag to rotate; the view stays when stepping)",
                   font=dict(color="#eeeeee", size=13), x=0.01, xanchor="left"),
        uirevision="hmr-mesh3d",
        scene=dict(xaxis=dict(range=[lo, hi], **axis), yaxis=dict(range=[-1.0, 1.0], **axis),
                   zaxis=dict(range=[-1.05, 1.1], **axis), aspectmode="manual",
                   aspectratio=dict(x=(hi - lo) / 2.15, y=2.0 / 2.15, z=1.0), bgcolor=CANVAS_BG,
                   camera=dict(eye=dict(x=0.0, y=-1.45, z=0.12), up=dict(x=0, y=0, z=1),
                               center=dict(x=0, y=0, z=0), projection=dict(type="perspective")),
                   uirevision="hmr-mesh3d"))


def _label_trace(names: list[str]) -> dict:
    return dict(type="scatter3d", x=[i * SPACING for i in range(len(names))], y=[0.0] * len(names),
                z=[1.0] * len(names), mode="text", text=[LABELS[n] for n in names],
                textfont=dict(color="#ffffff", size=13), hoverinfo="skip", showlegend=False, name="labels")


def mesh3d_figure(meshes: dict[str, tuple[np.ndarray, np.ndarray]], step: int) -> go.Figure:
    """The meshes side by side as a plotly figure (float32 vertices, int32 faces). The page draws the same
    scene through :func:`step_view` (which keeps the camera); this is its fallback and its reference."""
    fig = go.Figure()
    names = list(meshes)
    for slot, name in enumerate(names):
        v, f = meshes[name]
        x, y, z = display_coords(v, slot)
        f = np.asarray(f, dtype=np.int32)
        fig.add_trace(go.Mesh3d(x=x, y=y, z=z, i=f[:, 0], j=f[:, 1], k=f[:, 2], color=_hex(MESH_RGB[name]),
                                name=LABELS[name], flatshading=False, hoverinfo="skip", showscale=False,
                                lighting=MESH_LIGHTING, lightposition=MESH_LIGHT_POSITION))
    if names:
        fig.add_trace(go.Scatter3d(**{k: v for k, v in _label_trace(names).items() if k != "type"}))
    fig.update_layout(**mesh3d_layout(names, step))
    return fig


def step_view_args(meshes: dict[str, tuple[np.ndarray, np.ndarray]], step: int, overlay=None, curves=None) -> dict:
    """The step view's component arguments: a JSON ``spec`` (the 3-D scene's layout and mesh list, and the
    overlay and curves figures) and binary buffers: float32 vertices in the 3-D view's coordinates, planar
    (3, V) per mesh, back to back; int32 faces, planar (3, F), one buffer per distinct face array."""
    import hashlib
    names = list(meshes)
    face_sets: list[np.ndarray] = []
    entries, blobs = [], []
    for slot, name in enumerate(names):
        v, f = meshes[name]
        k = next((i for i, g in enumerate(face_sets) if g is f or (g.shape == f.shape and np.array_equal(g, f))),
                 None)
        if k is None:
            face_sets.append(f)
            k = len(face_sets) - 1
        entries.append({"name": name, "label": LABELS[name], "color": _hex(MESH_RGB[name]), "nv": int(len(v)),
                        "nf": int(len(f)), "face_set": k})
        blobs.append(display_coords(v, slot).tobytes())
    vertices = b"".join(blobs)
    args = {"vertices": vertices}
    for k, f in enumerate(face_sets):
        args[f"faces{k}"] = np.ascontiguousarray(np.asarray(f, dtype=np.int32).T).tobytes()
    spec = {"meshes": entries, "n_face_sets": len(face_sets), "layout": mesh3d_layout(names, step),
            "labels": _label_trace(names) if names else None, "lighting": MESH_LIGHTING,
            "lightposition": MESH_LIGHT_POSITION, "step": step,
            "overlay": plain_figure(overlay) if isinstance(overlay, go.Figure) else overlay,
            "curves": plain_figure(curves) if isinstance(curves, go.Figure) else curves}
    # the component re-renders only when its JSON changes: a digest of the buffers and the figures
    h = hashlib.blake2b(vertices, digest_size=8)
    h.update(json.dumps(spec, sort_keys=True).encode())
    spec["rev"] = h.hexdigest()
    args["spec"] = spec
    return args


_STEP_VIEW_HTML = r"""<!doctype html>
<html><head><meta charset="utf-8">
<style>html,body{margin:0;padding:0;background:transparent;overflow:hidden;
font-family:"Source Sans Pro","Source Sans 3",sans-serif}
.panel{width:100%%;margin:0 0 %(gap)dpx 0} #mesh{background:%(bg)s}</style>
<script src="./plotly.min.js"></script></head>
<body><div id="mesh" class="panel"></div><div id="overlay" class="panel"></div><div id="curves" class="panel"></div>
<script>
(function () {
  // A Streamlit component without the npm helper: the postMessage protocol of streamlit-component-lib.
  // Plotly.react updates the three plots in place, so the 3-D camera (uirevision) and zoom survive a step.
  var gd = document.getElementById("mesh"), ov = document.getElementById("overlay"),
      cu = document.getElementById("curves"), GAP = %(gap)d;
  window.__meshView = {renders: 0, rev: null, step: null, error: null, ms: null, panels: {}};
  function send(type, data) {
    window.parent.postMessage(Object.assign({isStreamlitMessage: true, type: type}, data || {}), "*");
  }
  // protobuf bytes arrive as Uint8Array views at any offset: copy before reinterpreting
  function f32(u8) { return new Float32Array(u8.slice().buffer); }
  function i32(u8) { return new Int32Array(u8.slice().buffer); }
  var config = {displaylogo: false, responsive: true};
  // The camera the user chose: plotly's uirevision alone loses it here (Plotly.react restores the camera from
  // _fullLayout, which a drag inside this iframe does not always update), so it is passed back explicitly.
  var userCamera = null, listening = false;
  function figure(div, fig) {
    if (!fig) { div.style.display = "none"; Plotly.purge(div); return Promise.resolve(0); }
    div.style.display = "block";
    fig.layout.autosize = true;
    var t0 = performance.now();
    return Plotly.react(div, fig.data, fig.layout, Object.assign({}, config, fig.config || {}))
      .then(function () { window.__meshView.panels[div.id] = performance.now() - t0; return fig.layout.height + GAP; });
  }
  function draw(a) {
    var spec = a.spec, verts = f32(a.vertices), faces = [], traces = [], at = 0, t0 = performance.now();
    for (var k = 0; k < spec.n_face_sets; k++) faces.push(i32(a["faces" + k]));
    spec.meshes.forEach(function (m) {
      var n = m.nv, F = faces[m.face_set], nf = m.nf;
      traces.push({type: "mesh3d", name: m.label, color: m.color,
        x: verts.subarray(at, at + n), y: verts.subarray(at + n, at + 2 * n), z: verts.subarray(at + 2 * n, at + 3 * n),
        i: F.subarray(0, nf), j: F.subarray(nf, 2 * nf), k: F.subarray(2 * nf, 3 * nf),
        flatshading: false, hoverinfo: "skip", showscale: false, lighting: spec.lighting,
        lightposition: spec.lightposition});
      at += 3 * n;
    });
    if (spec.labels) traces.push(spec.labels);
    var layout = spec.layout;
    layout.autosize = true;
    if (userCamera) layout.scene.camera = userCamera;
    return Promise.all([
      Plotly.react(gd, traces, layout, config).then(function () {
        if (!listening) {
          listening = true;
          gd.on("plotly_relayout", function (e) { if (e && e["scene.camera"]) userCamera = e["scene.camera"]; });
        }
        window.__meshView.panels.mesh = performance.now() - t0; return layout.height + GAP; }),
      figure(ov, spec.overlay), figure(cu, spec.curves)
    ]).then(function (heights) {
      window.__meshView.ms = performance.now() - t0;
      window.__meshView.renders += 1;
      window.__meshView.rev = spec.rev;
      window.__meshView.step = spec.step;
      send("streamlit:setFrameHeight", {height: heights.reduce(function (x, y) { return x + y; }, 0)});
    });
  }
  window.addEventListener("message", function (ev) {
    var d = ev.data;
    if (!d || d.type !== "streamlit:render") return;
    try {
      draw(d.args).catch(function (e) { window.__meshView.error = String(e); });
    } catch (e) {
      window.__meshView.error = String(e);
      gd.textContent = "The step view failed: " + e;
      send("streamlit:setFrameHeight", {height: 60});
    }
  });
  send("streamlit:componentReady", {apiVersion: 1});
})();
</script></body></html>
"""
STEP_VIEW_GAP = 12


def _step_view_dir() -> Path:
    """The component's files (an index.html and plotly.js from the plotly package), written once per
    version into the temporary directory."""
    from explorer.component_files import component_dir
    return component_dir("step_view", _STEP_VIEW_HTML % {"bg": CANVAS_BG, "gap": STEP_VIEW_GAP})


def declare_step_view():
    import streamlit.components.v1 as components
    return components.declare_component("hmr_step_view", path=str(_step_view_dir()))


def step_view(meshes: dict[str, tuple[np.ndarray, np.ndarray]], step: int, overlay: dict | None, curves: dict,
              key: str = "hmr_step_view") -> None:
    """Draw the per-step plots: the 3-D meshes, the rendered overlays and the curves. A small custom component
    (plotly.js in an iframe that Streamlit keeps across reruns) updates them in place with ``Plotly.react``:
    the 3-D camera stays when stepping (``st.plotly_chart`` re-creates a chart whose data changed, which
    resets a 3-D camera: streamlit/streamlit#8882), and nothing is re-created from scratch. Falls back to
    ``st.plotly_chart`` when the component's files cannot be written."""
    import importlib
    try:
        # declared from the imported module: Streamlit names a component after its caller's module, and a
        # page script run by st.navigation has none
        component = importlib.import_module("explorer.views.hmr").declare_step_view()
    except OSError as e:
        st.caption(f"(The 3-D view resets its camera on each step here: {e}.)")
        st.plotly_chart(mesh3d_figure(meshes, step), key=key + "_mesh")
        if overlay is not None:
            st.plotly_chart(go.Figure(overlay), key=key + "_overlay")
        st.plotly_chart(go.Figure(curves), key=key + "_curves")
        return
    est = 460 + (0 if overlay is None else overlay["layout"]["height"]) + curves["layout"]["height"] + 3 * STEP_VIEW_GAP
    component(**step_view_args(meshes, step, overlay, curves), key=key, default=None, height=int(est))


def body_window(kp2d: np.ndarray, conf: np.ndarray, true_uv: np.ndarray, margin: float = 0.3) -> tuple:
    """A square window (x0, x1, y0, y1) in image pixels around the body's keypoints (observed and true)."""
    pts = np.concatenate([kp2d[conf > 0], true_uv])
    lo, hi = pts.min(0), pts.max(0)
    c, half = (lo + hi) / 2, max(float((hi - lo).max()) * (0.5 + margin), 24.0)
    return float(c[0] - half), float(c[0] + half), float(c[1] - half), float(c[1] + half)


def overlay_figure(images: dict[str, str | None], kp2d: np.ndarray, conf: np.ndarray, step: int,
                   window: tuple | None = None) -> go.Figure:
    """Each method's offscreen render over the keypoint canvas, from the sample's camera. The axes are
    image pixels; ``window`` zooms every panel onto the body (default: the whole image)."""
    names = list(images)
    n = max(len(names), 1)
    x0, x1, y0, y1 = window or (0, IMAGE, 0, IMAGE)
    fig = make_subplots(1, n, subplot_titles=[LABELS[k] for k in names] or [""], horizontal_spacing=0.01)
    for c, name in enumerate(names, start=1):
        for tr in _keypoint_traces(kp2d, conf, None, legend=False):
            fig.add_trace(tr, row=1, col=c)
        sfx = "" if c == 1 else str(c)
        if images[name]:
            fig.add_layout_image(dict(source=images[name], xref=f"x{sfx}", yref=f"y{sfx}", x=0, y=0, sizex=IMAGE,
                                      sizey=IMAGE, xanchor="left", yanchor="top", sizing="stretch", layer="below"))
        fig.update_xaxes(range=[x0, x1], row=1, col=c)
        fig.update_yaxes(range=[y1, y0], scaleanchor=f"x{sfx}", scaleratio=1, row=1, col=c)
    fig.update_xaxes(showgrid=False, zeroline=False, showticklabels=False, constrain="domain")
    fig.update_yaxes(showgrid=False, zeroline=False, showticklabels=False, constrain="domain")
    fig.update_layout(height=300, margin=dict(l=4, r=4, t=58, b=4), plot_bgcolor=CANVAS_BG, showlegend=False,
                      uirevision="hmr-overlay", template="plotly_white",
                      title=dict(text=_overlay_title(step), font=dict(size=14), x=0.005, xanchor="left", y=0.98,
                                 yanchor="top"))
    fig.update_annotations(font_size=12)
    return fig


def _overlay_title(step: int) -> str:
    return (f"<b>Rendered from the sample's camera</b> at step {step} (pyrender, offscreen), zoomed onto the body; "
            "yellow: the observed keypoints")


def overlay_at(base: dict, images: dict[str, str], step: int) -> dict:
    """``overlay_figure`` as plain JSON, from ``base`` (the same figure without images, see
    :func:`overlay_base`): building a plotly figure costs more than the rest of a step."""
    layout = dict(base["layout"])
    layout["images"] = [dict(source=uri, xref=f"x{'' if c == 1 else c}", yref=f"y{'' if c == 1 else c}", x=0, y=0,
                             sizex=IMAGE, sizey=IMAGE, xanchor="left", yanchor="top", sizing="stretch", layer="below")
                        for c, uri in enumerate(images.values(), start=1) if uri]
    layout["title"] = {**layout["title"], "text": _overlay_title(step)}
    return {**base, "layout": layout}


@st.cache_data(max_entries=32, show_spinner=False)
def overlay_base(sample_key: tuple, names: tuple, window: tuple, _kp2d: np.ndarray, _conf: np.ndarray) -> dict:
    return plain_figure(overlay_figure({n: None for n in names}, _kp2d, _conf, 0, window))


def curves_figure(curves: dict[str, dict], step: int) -> go.Figure:
    """Reprojection error, MPJPE and PA-MPJPE per step for each method; the current step is marked."""
    fig = make_subplots(1, 3, subplot_titles=[t for _, t in METRICS], horizontal_spacing=0.06)
    for c, (key, _) in enumerate(METRICS, start=1):
        for name, cur in curves.items():
            y = cur[key]
            fig.add_trace(go.Scatter(x=list(range(len(y))), y=y, mode="lines+markers", marker=dict(size=4),
                                     line=dict(color=LINE[name], width=2), name=LABELS[name], legendgroup=name,
                                     showlegend=c == 1), row=1, col=c)
        names = [n for n in curves if step < len(curves[n][key])]
        fig.add_trace(go.Scatter(x=[step] * len(names), y=[curves[n][key][step] for n in names], mode="markers",
                                 marker=dict(size=11, color=[LINE[n] for n in names], symbol="circle-open",
                                             line=dict(width=3)),
                                 name="current step", text=[LABELS[n] for n in names],
                                 hovertemplate="%{text}: %{y:.3g}", showlegend=c == 1), row=1, col=c)
        fig.add_vline(x=step, line=dict(color="#888", dash="dot", width=1), row=1, col=c)
        fig.update_xaxes(title_text="inner iteration", row=1, col=c)
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10), uirevision="hmr-curves",
                      template="plotly_white",
                      legend=dict(orientation="h", y=1.16, yanchor="bottom", x=0))
    return fig


def curves_at(base: dict, curves: dict[str, dict], step: int) -> dict:
    """``curves_figure`` at ``step`` as plain JSON, from ``base`` (the figure at step 0, see
    :func:`curves_base`): only the current-step markers and lines move."""
    data, k = list(base["data"]), 0
    for i, t in enumerate(data):
        if t.get("name") == "current step":
            key = METRICS[k][0]
            names = [n for n in curves if step < len(curves[n][key])]
            data[i] = {**t, "x": [step] * len(names), "y": [curves[n][key][step] for n in names]}
            k += 1
    layout = dict(base["layout"])
    layout["shapes"] = [{**sh, "x0": step, "x1": step} for sh in layout.get("shapes", [])]
    return {**base, "data": data, "layout": layout}


@st.cache_data(max_entries=32, show_spinner=False)
def curves_base(fit_key: tuple, _curves: dict) -> dict:
    return plain_figure(curves_figure(_curves, 0))


# --- exports ------------------------------------------------------------------------------------
EXPORT_NOTE = ("L-SR1 Explorer HMR page: {what} at inner iteration {step}, sample {sample}\n"
               "camera coordinates in metres: x right in the image, y down, z forward (focal {focal:g} px, "
               "{size}x{size} px image, principal point at the centre)")


def mesh_download(meshes: dict, fmt: str, step: int, sample: str) -> bytes | str:
    from lsr1_core.hmr import CameraConfig
    from lsr1_core.hmr.export import meshes_ply_zip, obj_text
    cam = CameraConfig()
    named = {LABELS[k]: v for k, v in meshes.items()}
    note = EXPORT_NOTE.format(what=", ".join(named), step=step, sample=sample, focal=cam.focal, size=cam.image_size)
    return obj_text(named, note) if fmt == "OBJ" else meshes_ply_zip(named, note)


# --- the page ------------------------------------------------------------------------------------
def _sidebar(entries: list[dict]) -> dict:
    with st.sidebar:
        st.header("Human mesh recovery")
        bodies = [BODY_ANNY] + ([BODY_SMPL] if smpl_available() else [])
        body_choice = st.selectbox("Body model", bodies, key="hmr_body",
                                   help="Anny ships with the project. SMPL is licensed separately: set the "
                                        "environment variable LSR1_SMPL_MODEL to your SMPL model file or folder.")
        st.subheader("Checkpoints")
        chosen = {}
        for slot, (label, method) in SLOTS.items():
            opts = [e["label"] for e in entries if e["method"] == method]
            pref = [e["label"] for e in entries if e["slot"] == slot]
            options = opts + [NONE]
            default = pref[0] if pref else NONE
            chosen[slot] = st.selectbox(label, options, index=options.index(default), key=f"hmr_ckpt_{slot}")
        classical = tuple(c for c, lab in CLASSICAL.items()
                          if st.checkbox(f"{lab} (classical fitting)", value=True, key=f"hmr_cls_{c}"))
        steps = int(st.number_input("Inner iterations", min_value=1, max_value=50, value=15, key="hmr_steps",
                                    help="The paper evaluates 15 (LGD trains with 4, L-SR1 with 8)."))
        if not entries:
            st.caption("No HMR checkpoint found in pretrained/ or " + ", ".join(map(str, hmr_roots())) + ".")
    return {"body": body_choice, "chosen": chosen, "classical": classical, "steps": steps}


def _sample_controls():
    c1, c2 = st.columns([1, 1])
    source = c1.radio("Sample", ["shipped test set", "random new sample"], key="hmr_source", horizontal=True)
    if source == "shipped test set":
        n = len(shipped_test_set())
        idx = int(c2.number_input(f"test sample (0–{n - 1})", min_value=0, max_value=n - 1, value=0, step=1,
                                  key="hmr_index"))
        return ("test", idx), f"test-{idx}"
    seed = int(c2.number_input("seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="hmr_seed"))
    return ("random", seed), f"random-seed{seed}"


def render():
    st.title("Human mesh recovery")
    st.caption("Fit a body to 2-D keypoints with learned optimizers and watch them refine it step by step: a "
               "qualitative comparison of L-SR1 (white) and LGD (pink) as in the paper's Figures 5 and 9, with "
               "L-SR1 without the secant penalty and classical Adam / L-BFGS fitting from the same "
               "initialization.")
    entries = discover_checkpoints(tuple(map(str, hmr_roots())))
    cfg = _sidebar(entries)
    from lsr1_core.hmr import BodyModelError, CameraConfig
    from lsr1_core.hmr.data import project

    if cfg["body"] == BODY_SMPL:
        body_key = ("smpl", os.environ.get("LSR1_SMPL_MODEL", ""))
    else:
        body_key = ("anny", "")
    try:
        body = get_body(*body_key)
    except BodyModelError as e:
        st.error(f"The body model could not be loaded: {e}")
        return

    sample_key, sample_name = _sample_controls()
    b = sample_batch(sample_key)
    kp2d, conf = b.kp2d[0].numpy(), b.conf[0].numpy()
    true_uv = project(b.joints3d, CameraConfig())[0].numpy()
    n_vis = int((conf > 0).sum())

    # checkpoints → models, with a clear message for those that do not fit the body model
    by_label = {e["label"]: e for e in entries}
    models, ckpt_key = {}, []
    for slot, label in cfg["chosen"].items():
        if label == NONE or label not in by_label:
            continue
        e = by_label[label]
        model, err = load_model(e["path"], e["mtime"], body_key)
        if err:
            st.error(f"**{SLOTS[slot][0]}**: the checkpoint `{label}` does not fit the chosen body model "
                     f"({cfg['body']}) and is left out: {err}")
            continue
        models[slot] = model
        ckpt_key.append((slot, e["path"], e["mtime"]))
    if not entries:
        st.info("No HMR checkpoint is installed yet (pretrained/hmr_lgd, hmr_lsr1, hmr_lsr1_nosec are made by "
                "`python -m lsr1_core.hmr.train`, see the README). Classical Adam / L-BFGS fitting from the rest "
                "pose still runs below.")
    elif not models:
        st.warning(f"No learned checkpoint is usable with {cfg['body']}; Adam / L-BFGS start from the rest pose.")
    if not models and not cfg["classical"]:
        st.warning("Choose at least one method in the sidebar.")
        return

    t0 = time.perf_counter()
    with st.spinner("fitting every method from the same initialization…"):
        fit = fit_sample(body_key, sample_key, tuple(ckpt_key), cfg["classical"], cfg["steps"], _models=models)
    fit_wall = time.perf_counter() - t0
    fit_key = (sample_key, tuple(ckpt_key), cfg["classical"], cfg["steps"])

    left, right = st.columns([1, 2.7])
    left.plotly_chart(keypoint_figure(kp2d, conf, true_uv), key="hmr_keypoints", config={"displayModeBar": False})
    right.markdown(f"**Sample** `{sample_name}`: {n_vis} of 18 keypoints observed "
                   f"({18 - n_vis} missing, marked ✕ at their true position), 2-D noise σ = 1 % of the body's box. "
                   f"Body model: {cfg['body']}"
                   + ("; the sample and its ground-truth mesh come from the Anny body." if body_key[0] != "anny"
                      else "."))
    right.caption(f"Fitted {len(fit['poses'])} methods × {cfg['steps']} steps in {fit['seconds']:.2f} s "
                  f"(this run: {fit_wall:.2f} s, cached per sample). "
                  + (f"Adam and L-BFGS start from {LABELS[fit['start']]}'s initializer. " if fit["start"] else "")
                  + _initializer_note(fit))
    with right:
        metrics_table(fit)
    linked_view(body_key, fit_key, fit, sample_key, sample_name, kp2d, conf, true_uv)


def metrics_table(fit: dict) -> None:
    """Every method's metrics at its first and last step (the step control's table is below the curves)."""
    last = len(next(iter(fit["curves"].values()))["f"]) - 1
    lines = ["| method | 2-D error (px) | MPJPE (mm) | PA-MPJPE (mm) |", "|---|---:|---:|---:|"]
    for n, c in fit["curves"].items():
        lines.append(f"| {LABELS[n]} | {c['reproj'][0]:.2f} → {c['reproj'][last]:.2f} | "
                     f"{c['mpjpe'][0]:.1f} → {c['mpjpe'][last]:.1f} | {c['pa_mpjpe'][0]:.1f} → {c['pa_mpjpe'][last]:.1f} |")
    st.markdown("\n".join(lines) + f"\n\nStep 0 → step {last}.")


def _initializer_note(fit: dict) -> str:
    learned = [n for n in SLOTS if n in fit["poses"]]
    if len(learned) < 2:
        return ""
    p0 = [fit["poses"][n][0] for n in learned]
    if all(np.allclose(p, p0[0], atol=1e-6) for p in p0[1:]):
        return "All learned methods share step 0 (the same initializer)."
    return "Note: the learned checkpoints have different initializers, so their step 0 differs."


@st.fragment
def linked_view(body_key, fit_key, fit, sample_key, sample_name, kp2d, conf, true_uv):
    """The step control and everything it drives; a fragment, so stepping reruns only this part."""
    steps = len(next(iter(fit["curves"].values()))["f"]) - 1
    names = list(fit["poses"])
    c1, c2, c3 = st.columns([3, 1, 2.4])
    # The slider is a new widget when the number of steps changes; it then starts at the step it was on.
    start = min(int(st.session_state.get("hmr_step", steps)), steps)
    step = int(c1.slider("inner iteration (all methods together)", 0, steps, value=start, key="hmr_step"))
    show_gt = c2.toggle("ground truth", value=False, key="hmr_gt")
    default3d = [n for n in ("lsr1", "lgd") if n in names] or names[:2]
    # keyed by the methods on offer, so that a new set of methods starts from the default choice
    chosen = c3.multiselect("meshes shown (3-D view and renders)", names, default=default3d, format_func=LABELS.get,
                            key="hmr_in3d_" + "-".join(names),
                            help="Each mesh shown costs a skinning and an offscreen render per step; the "
                                 "curves and the downloads always cover every method.")
    body, cache, key = get_body(*body_key), step_cache(), (body_key, fit_key)
    verts = cache.meshes(body, key, fit, step, tuple(chosen))
    faces = faces_of(body_key)
    shown = {n: (verts[n], faces) for n in chosen}
    if show_gt:
        shown["gt"] = (gt_vertices(sample_key), anny_faces())

    problem = render_problem()
    overlay = None
    if problem:
        st.info(f"The rendered images are missing: {problem}. The 3-D view works without them.")
    elif shown:
        images = {n: cache.image((key, step, n) if n != "gt" else ("gt", sample_key), v, f, MESH_RGB[n])
                  for n, (v, f) in shown.items()}
        window = body_window(kp2d, conf, true_uv)
        overlay = overlay_at(overlay_base(sample_key, tuple(images), window, kp2d, conf), images, step)
    step_view(shown, step, overlay, curves_at(curves_base(fit_key, fit["curves"]), fit["curves"], step))
    # the neighbouring steps, while the user looks at this one
    cache.prefetch(body, key, fit, [s for s in (step - 1, step + 1) if 0 <= s <= steps], tuple(chosen), faces,
                   render=not problem)
    rows = [f"| {LABELS[n]} | {c['reproj'][step]:.2f} | {c['mpjpe'][step]:.1f} | {c['pa_mpjpe'][step]:.1f} | "
            f"{c['f'][step]:.5f} |" for n, c in fit["curves"].items()]
    st.markdown(f"**At step {step}**\n\n| method | 2-D error (px) | MPJPE (mm) | PA-MPJPE (mm) | objective f |\n"
                "|---|---:|---:|---:|---:|\n" + "\n".join(rows))

    d1, d2, d3 = st.columns([1, 1.4, 1.4])
    fmt = d1.radio("mesh format", ["OBJ", "PLY"], horizontal=True, key="hmr_fmt")
    ext, mime = ("obj", "text/plain") if fmt == "OBJ" else ("zip", "application/zip")

    def all_meshes():  # built when the button is pressed: every method, and the ground truth when shown
        body, faces = get_body(*body_key), faces_of(body_key)
        out = {n: (v, faces) for n, v in meshes_at(body, fit, step, names).items()}
        if show_gt:
            out["gt"] = shown["gt"]
        return mesh_download(out, fmt, step, sample_name)

    d2.download_button(f"Meshes at step {step} ({fmt})", all_meshes,
                       f"hmr_{sample_name}_step{step}.{ext}", mime, key="hmr_dl_mesh", on_click="ignore")
    from lsr1_core.hmr.export import metrics_csv
    d3.download_button("Per-step metrics (CSV)", lambda: metrics_csv(fit["curves"], LABELS),
                       f"hmr_{sample_name}_metrics.csv", "text/csv", key="hmr_dl_csv", on_click="ignore")


if __name__ == "__main__":  # run as a page; importing it (for its functions) renders nothing
    render()
