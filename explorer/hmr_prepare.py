"""Build, once per machine, what makes the Human mesh recovery page's first visit slow: the Anny body
model's own cache (``~/.cache/anny``, or ``$ANNY_CACHE_DIR``; about two minutes on 2 cores the first time,
two seconds afterwards), then the page's default view in ``explorer.hmr_cache`` (the test set and the
first sample's fits by the shipped checkpoints, Adam and L-BFGS: seconds). ``scripts/setup.sh`` runs it;
it returns quickly when everything is there.

    python -m explorer.hmr_prepare          # build what is missing
    python -m explorer.hmr_prepare --check  # exit status 1 when something is missing
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from explorer import hmr_cache
from lsr1_core.hmr import PRETRAINED_DIR, PRETRAINED_HMR, load_pretrained
from lsr1_core.hmr.anny_body import AnnyBody
from lsr1_core.hmr.compare import FITTERS, camera_vertices, fit_methods
from lsr1_core.hmr.data import CameraConfig, project
from lsr1_core.hmr.render import RenderUnavailable, render_mesh
from lsr1_core.viz.hmr import OVERLAY_PX, mesh_rgb, overlay_window

# the anny builders whose results anny caches (one safetensors file each; see anny.models.model_data)
ANNY_CACHED = ("load_data_", "build_model_data_", "build_compact_model_data_")
FIRST_BUILD_S = 120  # the first construction of the Anny model measured on 2 shared cores


def anny_cache_ready() -> bool:
    """True when anny's cache holds a built model (the first AnnyBody() then takes seconds, not minutes). Looks
    at the folder only (``$ANNY_CACHE_DIR`` or ``~/.cache/anny``, as anny.paths and scripts/setup.sh do):
    importing anny to ask it costs seconds (it imports torch._dynamo)."""
    root = Path(os.environ.get("ANNY_CACHE_DIR") or Path.home() / ".cache" / "anny")
    for folder in root.glob("v*"):
        names = [p.name for p in folder.glob("*.safetensors")]
        if all(any(n.startswith(prefix) for n in names) for prefix in ANNY_CACHED):
            return True
    return False


# the page's default view (explorer/views/hmr.py): the first test sample, 15 steps, Adam, L-BFGS and the untrained
# qn form (compare.FITTERS, all ticked by default), the meshes of L-SR1 and LGD shown at the last step
DEFAULT_VIEW = {"sample": ("test", 0), "classical": FITTERS, "steps": 15, "meshes": ("lsr1", "lgd")}


def default_view_key() -> str:
    ckpts = [(slot, PRETRAINED_DIR / stem) for slot, stem in PRETRAINED_HMR.items()
             if (PRETRAINED_DIR / f"{stem}.json").exists()]
    v = DEFAULT_VIEW
    return hmr_cache.fit_key("anny", v["sample"], ckpts, v["classical"], v["steps"])


def default_view(body, sample, fit) -> dict:
    """The default view's faces, meshes (by name), rendered overlays and their window, as the page makes them."""
    step, names = DEFAULT_VIEW["steps"], [n for n in DEFAULT_VIEW["meshes"] if n in fit["poses"]]
    verts = camera_vertices(body, np.stack([fit["poses"][n][step, 0] for n in names]),
                            np.stack([fit["shapes"][n][step, 0] for n in names]))
    faces = body.faces.cpu().numpy().astype(np.int32)
    out = {"faces": faces, **{f"mesh/{n}": v for n, v in zip(names, verts)}}
    kp, conf = sample.kp2d[0].numpy(), sample.conf[0].numpy()
    window = overlay_window(list(verts), kp, conf, project(sample.joints3d, CameraConfig())[0].numpy())
    out["window"] = np.array(window)
    try:
        for n, v in zip(names, verts):
            out[f"image/{n}"] = np.array(render_mesh(v, faces, mesh_rgb(n), window=window,
                                                     resolution=OVERLAY_PX).data_uri())
    except RenderUnavailable:
        pass  # the page renders (or explains) itself
    return out


def prepare(verbose: bool = True) -> float:
    """Build anny's cache if it is missing (by constructing the body model once), then the default view's
    test set and fits if they are missing; returns the seconds spent."""
    def say(msg):
        if verbose:
            print(f"[prepare] {msg}", flush=True)
    t0 = time.perf_counter()
    if not anny_cache_ready():
        say(f"building the Anny body model's cache (once per machine, about {FIRST_BUILD_S} s on 2 cores)…")
    if anny_cache_ready() and hmr_cache.load_fit(default_view_key()) is not None and \
            hmr_cache.load_arrays("view", default_view_key()) is not None:
        return 0.0
    torch.set_num_threads(1)  # small operations: one thread is faster, and kinder to a shared machine
    body = AnnyBody()
    batch = hmr_cache.test_set_cached(body)
    v = DEFAULT_VIEW
    say("fitting the HMR page's default sample…")
    sample = batch.subset(slice(v["sample"][1], v["sample"][1] + 1))
    fit = fit_methods(body, sample, load_pretrained(body), v["steps"], v["classical"])
    hmr_cache.save_fit(default_view_key(), fit)
    say("skinning and rendering its default meshes…")
    hmr_cache.save_arrays("view", default_view_key(), default_view(body, sample, fit))
    dt = time.perf_counter() - t0
    say(f"done in {dt:.0f} s")
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m explorer.hmr_prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report; exit status 1 when something is missing")
    a = ap.parse_args(argv)
    if a.check:
        anny = anny_cache_ready()
        view = hmr_cache.load_fit(default_view_key()) is not None
        print("anny cache:", "ready" if anny else "missing", "| HMR page's default view:", "ready" if view else "missing")
        return 0 if anny and view else 1
    prepare()
    return 0


if __name__ == "__main__":
    sys.exit(main())
