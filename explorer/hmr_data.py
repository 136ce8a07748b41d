"""The Human mesh recovery page's cached resources: body models, samples, checkpoints, fits and the test-set
evaluation (Streamlit caches around ``lsr1_core.hmr``; no computation of their own)."""
from __future__ import annotations

import threading
import time

import numpy as np
import streamlit as st
import torch

from explorer.step_cache import StepCache, one_thread
from lsr1_core.errors import LSR1Error
from lsr1_core.hmr import BodyModelError, CameraConfig, PoseSampler, make_batch, test_set
from lsr1_core.hmr.compare import camera_vertices, curves, evaluate_steps, fit_methods
from lsr1_core.hmr.data import SampleConfig
from lsr1_core.hmr.models import load_hmr_model
from lsr1_core.hmr.prepare import FIRST_BUILD_S, anny_cache_ready
from lsr1_core.runs.catalog import hmr_models


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


@st.cache_resource(show_spinner="building the body model…")
def get_body(kind: str, smpl_path: str = ""):
    """The body model (raises BodyModelError with the reason when it cannot be loaded)."""
    with one_thread():
        if kind == "smpl":
            from lsr1_core.hmr.smpl import SMPLBody
            return SMPLBody(smpl_path or None)
        from lsr1_core.hmr import AnnyBody
        return AnnyBody()


@st.cache_resource(show_spinner="building the test set…")
def shipped_test_set():
    with one_thread():
        return test_set(get_body("anny"))


@st.cache_resource(max_entries=64, show_spinner=False)
def random_sample(seed: int):
    """A new sample from the held-out clips (the test set's noise and drop rate), reproducible by its seed."""
    with one_thread():
        anny = get_body("anny")
        gen = torch.Generator().manual_seed(int(seed))
        pose, shape = PoseSampler(anny, "test", jitter=0.0).draw(1, gen)
        return make_batch(anny, pose, shape, gen, CameraConfig(), SampleConfig(noise=0.01))


def sample_batch(sample_key: tuple):
    """("test", index) or ("random", seed) → an HMRBatch of one sample (always made with the Anny body);
    ("tests", (i, j, …)) → those test samples."""
    kind, value = sample_key
    if kind == "test":
        return shipped_test_set().subset(slice(int(value), int(value) + 1))
    if kind == "tests":
        return shipped_test_set().subset(torch.tensor(value, dtype=torch.long))
    return random_sample(int(value))


@st.cache_data(ttl=20, show_spinner=False)
def checkpoints(roots: str | None) -> dict[str, dict]:
    """label → entry of the shipped HMR checkpoints and HMR runs (``lsr1_core.runs.catalog.hmr_models``)."""
    return hmr_models(roots)


@st.cache_resource(max_entries=16, show_spinner="loading the checkpoint…")
def load_model(path: str, mtime: int, body_key: tuple):
    """(model, None, None) or (None, the reason it cannot be used, whether the reason is the body model)."""
    try:
        return load_hmr_model(path, get_body(*body_key))[0], None, False
    except BodyModelError as e:
        return None, str(e), True
    except LSR1Error as e:
        return None, str(e), False


@st.cache_data(max_entries=32, show_spinner=False)
def fit_sample(body_key: tuple, sample_key: tuple, ckpt_key: tuple, classical: tuple, steps: int,
               _models: dict) -> dict:
    """Every method's estimates at steps 0…steps (``compare.fit_methods``), its per-step curves (means over
    the samples) and the seconds the fit took (cached per sample and choice of methods)."""
    t0 = time.perf_counter()
    with one_thread():
        fit = fit_methods(get_body(*body_key), sample_batch(sample_key), _models, steps, classical)
    fit["curves"] = curves(fit)
    fit["wall"] = time.perf_counter() - t0
    return fit


@st.cache_data(max_entries=8, show_spinner=False)
def evaluation(body_key: tuple, n: int, ckpt_key: tuple, classical: tuple, steps: int, _models: dict,
               _progress=None) -> dict:
    """Per-step statistics over the first ``n`` test samples (``compare.evaluate_steps``)."""
    with one_thread():
        return evaluate_steps(get_body(*body_key), shipped_test_set().subset(slice(0, n)), _models, steps,
                              classical, _progress)


@st.cache_data(max_entries=16, show_spinner=False)
def gt_vertices(sample_key: tuple) -> np.ndarray:
    """The sample's true mesh (Anny), camera coordinates."""
    b = sample_batch(sample_key)
    with one_thread():
        return camera_vertices(get_body("anny"), b.pose[:1].numpy(), b.shape[:1].numpy())[0]


@st.cache_resource(show_spinner=False)
def faces_of(body_key: tuple) -> np.ndarray:
    return get_body(*body_key).faces.cpu().numpy().astype(np.int32)


@st.cache_resource(show_spinner=False)
def step_cache() -> StepCache:
    return StepCache()
