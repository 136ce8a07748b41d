"""The Human mesh recovery page's cached resources: body models, samples, checkpoints, fits and the test-set
evaluation (Streamlit caches around ``lsr1_core.hmr``; no computation of their own)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from explorer import hmr_cache
from explorer.hmr_prepare import FIRST_BUILD_S, anny_cache_ready
from explorer.step_cache import StepCache, one_thread
from lsr1_core.hmr import BodyModel, BodyModelError, CameraConfig, PoseSampler, make_batch
from lsr1_core.hmr.anny_body import AnnyBody
from lsr1_core.hmr.compare import camera_vertices, curves, evaluate_steps, fit_methods
from lsr1_core.hmr.data import SampleConfig, project
from lsr1_core.hmr.models import load_hmr_model
from lsr1_core.hmr.render import render_status
from lsr1_core.runs.catalog import hmr_models
from lsr1_core.viz.hmr import OVERLAY_PX, mesh_rgb, overlay_window


def build_body_with_progress(kind: str) -> None:
    """The first Anny body on a machine builds anny's cache (minutes; ``scripts/setup.sh`` does it ahead):
    when that is about to happen, build it on a thread and show a progress bar meanwhile."""
    if kind != "anny" or anny_cache_ready():
        return
    from lsr1_core.hmr import AnnyBody
    err: list = []

    def build():
        try:
            with one_thread():
                AnnyBody()
        except Exception as e:  # noqa: BLE001 - shown by get_body's own attempt below
            err.append(e)
    th = threading.Thread(target=build, daemon=True)
    t0 = time.perf_counter()
    th.start()
    bar = st.progress(0.0, text="Building the Anny body model (once per machine; `scripts/setup.sh` does this "
                                "ahead)…")
    while th.is_alive():
        el = time.perf_counter() - t0
        bar.progress(min(el / FIRST_BUILD_S, 0.99),
                     text=f"Building the Anny body model, once per machine: {el:.0f} s of about {FIRST_BUILD_S} s "
                          "(`scripts/setup.sh` does this ahead)…")
        th.join(0.5)
    bar.empty()


@st.cache_resource(show_spinner=False)
def warm_renderer() -> threading.Thread:
    """Start the offscreen renderer (an OpenGL context: seconds) on a thread, once per process, so that it is
    ready when the first fit is: the page calls this first."""
    th = threading.Thread(target=render_status, daemon=True, name="lsr1-render-warm-up")
    th.start()
    return th


_BODIES: dict = {}
_BODY_LOCK = threading.Lock()


def get_body(kind: str, smpl_path: str = ""):
    """The body model, built once per process (raises BodyModelError with the reason when it cannot be loaded).
    Thread-safe: the prefetcher may build it first, a second caller waits for it. The page's first view needs
    no Anny body when set-up cached it (see ``explorer.hmr_prepare``)."""
    with _BODY_LOCK, one_thread():
        if (kind, smpl_path) not in _BODIES:
            if kind == "smpl":
                from lsr1_core.hmr.smpl import SMPLBody
                _BODIES[(kind, smpl_path)] = SMPLBody(smpl_path or None)
            else:
                _BODIES[(kind, smpl_path)] = AnnyBody()
        return _BODIES[(kind, smpl_path)]


def body_built(body_key: tuple) -> bool:
    return tuple(body_key) in _BODIES


class AnnySignature(BodyModel):
    """The Anny body's signature, to check checkpoints against without building the body."""
    name, pose_dim, shape_dim, keypoint_names = (AnnyBody.name, AnnyBody.pose_dim, AnnyBody.shape_dim,
                                                 AnnyBody.keypoint_names)


def body_signature(body_key: tuple) -> BodyModel:
    return AnnySignature() if body_key[0] == "anny" else get_body(*body_key)


@st.cache_resource(show_spinner="building the test set…")
def shipped_test_set():
    with one_thread():
        return hmr_cache.test_set_cached(lambda: get_body("anny"))


@st.cache_data(max_entries=16, show_spinner=False)
def stored_view(fit_disk_key: str) -> dict:
    """What set-up stored of a sample's default view (``explorer.hmr_prepare.default_view``): faces,
    meshes and rendered overlays by name, and the overlays' window; empty when nothing is stored."""
    arrays = hmr_cache.load_arrays("view", fit_disk_key) or {}
    return {"faces": arrays.get("faces"), "window": tuple(arrays["window"].tolist()) if "window" in arrays else None,
            "meshes": {k[5:]: v for k, v in arrays.items() if k.startswith("mesh/")},
            "images": {k[6:]: str(v) for k, v in arrays.items() if k.startswith("image/")}}


@st.cache_resource(max_entries=64, show_spinner=False)
def random_sample(seed: int):
    """A new sample from the held-out clips (the test set's noise and drop rate), reproducible by its seed."""
    with one_thread():
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


@st.cache_data(ttl=20, show_spinner=False)
def checkpoints(roots: str | None) -> dict[str, dict]:
    """label → entry of the shipped HMR checkpoints and HMR runs (``lsr1_core.runs.catalog.hmr_models``)."""
    return hmr_models(roots)


@st.cache_data(ttl=20, show_spinner=False)
def checkpoint_problem(path: str, mtime: int, body_key: tuple) -> tuple[str | None, bool]:
    """(None, False) when a checkpoint's card fits the body model and its weights file is there, else (the
    reason, whether the reason is the body model). Reads the card only: the weights are loaded when a fit
    needs them (:func:`models_for`), which the disk cache often spares the page's first visit."""
    card_path = Path(path).with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
        body_signature(body_key).check_signature(card.get("body") or {}, what=f"checkpoint {path}")
    except BodyModelError as e:
        return str(e), True
    except (OSError, ValueError, AttributeError) as e:
        return f"its model card {card_path} cannot be read: {e}", False
    weights = card_path.with_name(card.get("weights_file") or f"{card_path.stem}.safetensors")
    if not weights.exists():
        return f"model card {card_path} found but its weights file {weights} is missing", False
    return None, False


@st.cache_resource(max_entries=4, show_spinner="loading the checkpoints…")
def models_for(ckpt_key: tuple, body_key: tuple) -> dict:
    """The checkpoints of ``ckpt_key`` ((slot, path, mtime) each) loaded for the body model, by slot (raises
    LSR1Error when one cannot be loaded after all, e.g. a weights file that does not match its card)."""
    with one_thread():
        return {slot: load_hmr_model(path, get_body(*body_key))[0] for slot, path, _ in ckpt_key}


@st.cache_data(max_entries=32, show_spinner=False)
def fit_sample(body_key: tuple, sample_key: tuple, ckpt_key: tuple, classical: tuple, steps: int) -> dict:
    """Every method's estimates at steps 0…steps (``compare.fit_methods``), its per-step curves (means over
    the samples) and the seconds the fit took; cached per sample and choice of methods, for the Anny body also
    on disk (``explorer.hmr_cache``: set-up stores the default view's)."""
    t0 = time.perf_counter()
    key = hmr_cache.fit_key("anny", sample_key, [(slot, path) for slot, path, _ in ckpt_key], classical, steps)
    fit = hmr_cache.load_fit(key) if body_key[0] == "anny" else None
    stored = fit is not None
    if fit is None:
        models = models_for(ckpt_key, body_key)
        with one_thread():
            fit = fit_methods(get_body(*body_key), sample_batch(sample_key), models, steps, classical)
        if body_key[0] == "anny":
            hmr_cache.save_fit(key, fit)
    fit["curves"] = curves(fit)
    fit["wall"] = time.perf_counter() - t0
    fit["disk_key"] = key if stored else None  # where set-up may have stored this sample's default view
    return fit


@st.cache_data(max_entries=8, show_spinner=False)
def evaluation(body_key: tuple, n: int, ckpt_key: tuple, classical: tuple, steps: int, _progress=None) -> dict:
    """Per-step statistics over the first ``n`` test samples (``compare.evaluate_steps``)."""
    models = models_for(ckpt_key, body_key)
    with one_thread():
        return evaluate_steps(get_body(*body_key), shipped_test_set().subset(slice(0, n)), models, steps,
                              classical, _progress)


@st.cache_data(max_entries=16, show_spinner=False)
def gt_vertices(sample_key: tuple) -> np.ndarray:
    """The sample's true mesh (Anny), camera coordinates."""
    b = sample_batch(sample_key)
    with one_thread():
        return camera_vertices(get_body("anny"), b.pose[:1].numpy(), b.shape[:1].numpy())[0]


def faces_of(body_key: tuple, stored: np.ndarray | None = None) -> np.ndarray:
    """The body model's faces (int32), or ``stored`` (the same, from the disk cache) while the body is not built."""
    if stored is not None and not body_built(body_key):
        return stored
    return _faces(tuple(body_key))


@st.cache_resource(show_spinner=False)
def _faces(body_key: tuple) -> np.ndarray:
    return get_body(*body_key).faces.cpu().numpy().astype(np.int32)


@st.cache_resource(show_spinner=False)
def step_cache() -> StepCache:
    return StepCache()


def sample_grid(body_key: tuple, indices: tuple, ckpt_key: tuple, classical: tuple, steps: int, step: int,
                names: tuple, render: bool) -> list[dict]:
    """The rows of ``lsr1_core.viz.hmr.sample_grid_figure`` for the test samples ``indices`` at ``step``. Each
    sample is fitted alone, as the single-sample view does (the same cached fit: L-SR1's BatchNorm normalises
    over the rows of a batch, so a joint fit would differ), and its meshes rendered over one window."""
    body, cache = (lambda: get_body(*body_key)), step_cache()
    faces, anny_faces = faces_of(body_key), faces_of(("anny", ""))
    rows = []
    for idx in indices:
        key = ("test", int(idx))
        fit = fit_sample(body_key, key, ckpt_key, classical, steps)
        methods = tuple(n for n in names if n in fit["poses"])
        verts = cache.meshes(body, (body_key, (key, ckpt_key, classical, steps)), fit, step, methods)
        shown = {n: (verts[n], faces) for n in methods}
        if "gt" in names:
            shown["gt"] = (gt_vertices(key), anny_faces)
        b = sample_batch(key)
        kp, conf = b.kp2d[0].numpy(), b.conf[0].numpy()
        true_uv = project(b.joints3d, CameraConfig())[0].numpy()
        window = overlay_window([v for v, _ in shown.values()], kp, conf, true_uv)
        images = {n: cache.image(("grid", body_key, key, ckpt_key, classical, steps, step, n), v, f, mesh_rgb(n),
                                 window, OVERLAY_PX) for n, (v, f) in shown.items()} if render else {}
        rows.append({"title": f"test-{idx}", "kp2d": kp, "conf": conf, "window": window, "images": images,
                     "pa_mpjpe": {n: float(fit["metrics"][n]["pa_mpjpe"][step, 0]) for n in methods}})
    return rows
