"""The Human mesh recovery page's step view: 3-D meshes, rendered overlays and per-step curves in one custom
component (``assets/components/hmr_step_view.html``: plotly.js in an iframe that Streamlit keeps across
reruns), updated in place with ``Plotly.react``. The 3-D camera stays when stepping (``st.plotly_chart``
re-creates a chart whose data changed, which resets a 3-D camera: streamlit/streamlit#8882), and nothing is
re-created from scratch. Vertices and faces travel as binary buffers, not JSON."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components

from explorer.component_files import plain_figure
from explorer.components.files import component_dir
from lsr1_core.hmr.compare import LABELS
from lsr1_core.viz.hmr import (MESH3D_HEIGHT, MESH_LIGHT_POSITION, MESH_LIGHTING, hex_color, label_trace,
                               mesh3d_figure, mesh3d_scene, mesh_rgb)

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "components"
HTML = ASSETS / "hmr_step_view.html"
GAP = 12  # pixels between the view's plots


def step_view_args(meshes: dict[str, tuple[np.ndarray, np.ndarray]], step: int, overlay=None, curves=None,
                   box: dict | None = None) -> dict:
    """The component's arguments: a JSON ``spec`` (the 3-D scene's layout and mesh list, and the overlay and
    curves figures) and binary buffers: float32 vertices in the 3-D view's coordinates, planar (3, V) per mesh,
    back to back; int32 faces, planar (3, F), one buffer per distinct face array. ``box``: a scene box the
    view must hold besides the meshes (``lsr1_core.viz.hmr.mesh3d_scene``)."""
    names = list(meshes)
    coords, layout = mesh3d_scene(meshes, step, box)
    face_sets: list[np.ndarray] = []
    entries = []
    for name, xyz in zip(names, coords):
        v, f = meshes[name]
        k = next((i for i, g in enumerate(face_sets) if g is f or (g.shape == f.shape and np.array_equal(g, f))),
                 None)
        if k is None:
            face_sets.append(f)
            k = len(face_sets) - 1
        entries.append({"name": name, "label": LABELS[name], "color": hex_color(mesh_rgb(name)), "nv": int(len(v)),
                        "nf": int(len(f)), "face_set": k})
    vertices = b"".join(xyz.tobytes() for xyz in coords)
    args = {"vertices": vertices}
    for k, f in enumerate(face_sets):
        args[f"faces{k}"] = np.ascontiguousarray(np.asarray(f, dtype=np.int32).T).tobytes()
    spec = {"meshes": entries, "n_face_sets": len(face_sets), "layout": layout,
            "labels": label_trace(names, coords) if names else None, "lighting": MESH_LIGHTING,
            "lightposition": MESH_LIGHT_POSITION, "step": step, "gap": GAP,
            "overlay": plain_figure(overlay) if isinstance(overlay, go.Figure) else overlay,
            "curves": plain_figure(curves) if isinstance(curves, go.Figure) else curves}
    # the component re-renders only when its JSON changes: a digest of the buffers and the figures
    h = hashlib.blake2b(vertices, digest_size=8)
    h.update(json.dumps(spec, sort_keys=True).encode())
    spec["rev"] = h.hexdigest()
    args["spec"] = spec
    return args


def _declared():
    """Declared from this module: Streamlit names a component after its caller's module (a page script run by
    st.navigation has none). The folder holds the HTML and plotly.js's gl3d bundle (``explorer.components.files``);
    raises OSError when it cannot be written or the HTML is missing."""
    return components.declare_component("hmr_step_view", path=str(component_dir("step_view", HTML.read_text(),
                                                                                "gl3d")))


def step_view(meshes: dict[str, tuple[np.ndarray, np.ndarray]], step: int, overlay: dict | None, curves: dict,
              key: str = "hmr_step_view", box: dict | None = None) -> dict:
    """Draw the per-step plots; falls back to ``st.plotly_chart`` (the 3-D camera then resets on each step)
    when the component's files cannot be found or written. Returns the 3-D scene's box (pass it back with the
    next step so that the view stays still)."""
    try:
        component = _declared()
    except OSError as e:
        st.caption(f"(The 3-D view resets its camera on each step here: {e}.)")
        st.plotly_chart(mesh3d_figure(meshes, step), key=key + "_mesh")
        if overlay is not None:
            st.plotly_chart(go.Figure(overlay), key=key + "_overlay")
        st.plotly_chart(go.Figure(curves), key=key + "_curves")
        return box
    est = MESH3D_HEIGHT + (0 if overlay is None else overlay["layout"]["height"]) + curves["layout"]["height"] \
        + 3 * GAP
    args = step_view_args(meshes, step, overlay, curves, box)
    component(**args, key=key, default=None, height=int(est))
    scene = args["spec"]["layout"]["scene"]
    return {k: scene[f"{k}axis"]["range"] for k in "xyz"}
