"""Figures of the Human mesh recovery page (pure: numpy in, plotly figures or plain figure JSON out).

Coordinates: keypoints and renders are in pixels of the sample's virtual image (``CameraConfig().image_size``
a side, y down); meshes come in the pipeline's camera coordinates (metres, x right, y down, z forward) and the
3-D view shows them side by side, one slot each (:func:`display_coords`). Colours: one per method, from
:mod:`lsr1_core.viz.palette` (meshes in a light tint of it, so that they read on the dark canvas).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..hmr.body import COCO18
from ..hmr.compare import LABELS, METRICS
from ..hmr.data import CameraConfig
from ..hmr.render import framing_window
from .palette import color_for, rgb01, with_alpha

IMAGE = CameraConfig().image_size  # the virtual image's size in pixels
DISTANCE = CameraConfig().distance
CANVAS_BG = "#2b2f36"
# OpenPose COCO-18 limbs
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
SPACING = 1.9  # metres between the meshes in the 3-D view (more when a body is wider)
MESH3D_HEIGHT = 460
MESH_LIGHTING = dict(ambient=0.55, diffuse=0.85, specular=0.05, roughness=0.9, fresnel=0.05)
MESH_LIGHT_POSITION = dict(x=-3e4, y=-1e5, z=6e4)
# plotly's 3-D perspective camera: vertical field of view 45°; the view's width : height assumed when the
# browser does not fit the camera itself (the step view's component does, from its real size)
TAN_HALF_FOV, ASSUMED_ASPECT = float(np.tan(np.pi / 8)), 2.4


def line_color(name: str) -> str:
    """A method's colour in curves and on white (the project-wide palette)."""
    return color_for(LABELS.get(name, name))


def mesh_rgb(name: str, tint: float = 0.5) -> tuple[float, float, float]:
    """A method's mesh colour in [0, 1]: its palette colour mixed with ``tint`` of white."""
    return tuple(float(c + (1 - c) * tint) for c in rgb01(line_color(name)))


def hex_color(rgb) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb[:3])


# --- the keypoint canvas ---------------------------------------------------------------------------
def body_square(kp2d: np.ndarray, conf: np.ndarray, missing_uv: np.ndarray | None = None,
                margin: float = 0.18) -> tuple[float, float, float]:
    """A square (u0, v0, size) in image pixels around the observed keypoints (and the missing ones' true
    positions), with ``margin`` of its size on each side; at least 48 px."""
    pts = [np.asarray(kp2d)[np.asarray(conf) > 0]]
    if missing_uv is not None:
        pts.append(np.asarray(missing_uv)[np.asarray(conf) <= 0])
    pts = np.concatenate(pts).reshape(-1, 2).astype(float)
    if not len(pts):
        return 0.0, 0.0, float(IMAGE)
    lo, hi = pts.min(0), pts.max(0)
    c, size = (lo + hi) / 2, max(float((hi - lo).max()) * (1 + 2 * margin), 48.0)
    return float(c[0] - size / 2), float(c[1] - size / 2), size


def keypoint_traces(kp2d: np.ndarray, conf: np.ndarray, missing_uv: np.ndarray | None, legend: bool = True,
                    size: float = 7.0) -> list[go.Scatter]:
    """The skeleton of the observed keypoints, the keypoints, and (when ``missing_uv`` is given) the true
    positions of the missing ones."""
    vis = conf > 0
    xs, ys = [], []
    for a, b in LIMBS:
        if vis[a] and vis[b]:
            xs += [float(kp2d[a, 0]), float(kp2d[b, 0]), None]
            ys += [float(kp2d[a, 1]), float(kp2d[b, 1]), None]
    traces = [go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(255,255,255,0.55)", width=size / 3.5),
                         hoverinfo="skip", name="skeleton", showlegend=False),
              go.Scatter(x=kp2d[vis, 0].astype(float), y=kp2d[vis, 1].astype(float), mode="markers",
                         marker=dict(size=size, color="#ffd400", line=dict(color="#000", width=1)),
                         text=[n for n, v in zip(COCO18, vis) if v], hovertemplate="%{text}: (%{x:.1f}, %{y:.1f})",
                         name="observed keypoints", showlegend=legend)]
    if missing_uv is not None and (~vis).any():
        traces.append(go.Scatter(x=missing_uv[~vis, 0].astype(float), y=missing_uv[~vis, 1].astype(float),
                                 mode="markers+text", marker=dict(size=size + 3, symbol="x-thin-open", color="#ff4b4b",
                                                                  line=dict(color="#ff4b4b", width=2)),
                                 text=[n for n, v in zip(COCO18, vis) if not v], textposition="middle right",
                                 textfont=dict(color="#ff9b9b", size=11),
                                 hovertemplate="%{text} (missing; true position)",
                                 name="missing (true position, not observed)", showlegend=legend))
    return traces


def keypoint_figure(kp2d: np.ndarray, conf: np.ndarray, missing_uv: np.ndarray | None,
                    height: int = 520) -> go.Figure:
    """The sample's keypoints, zoomed onto the body (axes in pixels of the virtual image, y down; the image's
    border drawn where it is in view); missing keypoints are named beside their true position. The figure
    fills its column's width."""
    fig = go.Figure(keypoint_traces(kp2d, conf, missing_uv, size=12.0))
    u0, v0, size = body_square(kp2d, conf, missing_uv)
    fig.add_shape(type="rect", x0=0, y0=0, x1=IMAGE, y1=IMAGE, line=dict(color="#888", width=1, dash="dot"),
                  layer="below")
    tick = dict(showgrid=False, zeroline=False, constrain="domain", tickfont=dict(size=10, color="#666"))
    fig.update_xaxes(range=[u0, u0 + size], **tick)
    fig.update_yaxes(range=[v0 + size, v0], scaleanchor="x", scaleratio=1, **tick)
    fig.update_layout(height=height, margin=dict(l=30, r=6, t=34, b=6), plot_bgcolor=CANVAS_BG,
                      title=dict(text=f"keypoints (pixels of the {IMAGE}×{IMAGE} image, zoomed on the body)",
                                 font=dict(size=14)),
                      legend=dict(orientation="h", y=-0.04, yanchor="top", font=dict(size=12)))
    return fig


# --- the 3-D view ------------------------------------------------------------------------------------
def slot_offsets(meshes: list[np.ndarray], spacing: float = SPACING) -> list[float]:
    """x offsets (metres) that put the meshes side by side without overlap: ``spacing`` apart, or more when
    the widest body needs it."""
    widest = max((float(np.ptp(np.asarray(v)[:, 0])) for v in meshes), default=0.0)
    step = max(spacing, widest + 0.25)
    return [i * step for i in range(len(meshes))]


def display_coords(v_cam: np.ndarray, offset: float) -> np.ndarray:
    """(3, V) float32 coordinates of the 3-D view: x = image right (+ the mesh's slot offset), y = depth
    about the body's root (away from the camera), z = image up; metres."""
    v = np.asarray(v_cam, dtype=np.float32)
    return np.stack([v[:, 0] + np.float32(offset), v[:, 2] - np.float32(DISTANCE), -v[:, 1]]).astype(np.float32)


def scene_box(coords: list[np.ndarray], pad: float = 0.12) -> dict[str, list[float]]:
    """The 3-D view's axis ranges: every vertex of every shown mesh (display coordinates) plus ``pad``
    metres, and at least a 2.15 m tall, 2 m deep box so that one body keeps its usual size."""
    if not coords:
        return {"x": [-SPACING / 2, SPACING / 2], "y": [-1.0, 1.0], "z": [-1.05, 1.1]}
    lo = np.min([c.min(1) for c in coords], 0) - pad
    hi = np.max([c.max(1) for c in coords], 0) + pad
    box = {}
    for i, (ax, least) in enumerate((("x", 1.9), ("y", 2.0), ("z", 2.15))):
        mid, half = (lo[i] + hi[i]) / 2, max((hi[i] - lo[i]) / 2, least / 2)
        box[ax] = [float(mid - half), float(mid + half)]
    return box


def fit_eye(aspect: dict, width_over_height: float = ASSUMED_ASPECT, margin: float = 1.08) -> dict:
    """A camera eye in front of the scene (looking along +y, slightly from above) far enough that the whole
    box (plotly's aspect-ratio units: the box spans ±aspect/2) fits plotly's 45° perspective view of the given
    width : height. The step view's component recomputes it from the plot's real size."""
    d = margin * max(aspect["z"] / 2 / TAN_HALF_FOV, aspect["x"] / 2 / (TAN_HALF_FOV * width_over_height))
    d += aspect["y"] / 2
    return dict(x=0.0, y=-round(d, 4), z=round(0.08 * d, 4))


def mesh3d_layout(names: list[str], step: int, box: dict | None = None) -> dict:
    box = box or scene_box([])
    span = {k: v[1] - v[0] for k, v in box.items()}
    aspect = {k: round(span[k] / span["z"], 4) for k in span}
    axis = dict(visible=False, showbackground=False)
    return dict(
        height=MESH3D_HEIGHT, margin=dict(l=0, r=0, t=30, b=0), paper_bgcolor=CANVAS_BG, showlegend=False,
        title=dict(text=f"meshes at step {step} (drag to rotate; the view stays when stepping)",
                   font=dict(color="#eeeeee", size=13), x=0.01, xanchor="left"),
        uirevision="hmr-mesh3d",
        scene=dict(xaxis=dict(range=box["x"], **axis), yaxis=dict(range=box["y"], **axis),
                   zaxis=dict(range=box["z"], **axis), aspectmode="manual", aspectratio=aspect, bgcolor=CANVAS_BG,
                   camera=dict(eye=fit_eye(aspect), up=dict(x=0, y=0, z=1), center=dict(x=0, y=0, z=0),
                               projection=dict(type="perspective")),
                   uirevision="hmr-mesh3d"))


def label_trace(names: list[str], coords: list[np.ndarray]) -> dict:
    """Each mesh's name above its head, in its colour."""
    return dict(type="scatter3d", x=[float(np.median(c[0])) for c in coords], y=[0.0] * len(names),
                z=[float(c[2].max()) + 0.12 for c in coords], mode="text", text=[LABELS[n] for n in names],
                textfont=dict(color=[hex_color(mesh_rgb(n)) for n in names], size=14), hoverinfo="skip",
                showlegend=False, name="labels")


def union_box(a: dict | None, b: dict) -> dict:
    """The smallest box holding both (``a`` may be None)."""
    if a is None:
        return b
    return {k: [min(a[k][0], b[k][0]), max(a[k][1], b[k][1])] for k in b}


def mesh3d_scene(meshes: dict[str, tuple[np.ndarray, np.ndarray]], step: int,
                 box: dict | None = None) -> tuple[list[np.ndarray], dict]:
    """The meshes' display coordinates (one (3, V) array each) and the 3-D view's layout, whose box holds them
    all and ``box`` (the page passes the box of the steps seen before, so that the view stays still while
    stepping)."""
    names = list(meshes)
    offsets = slot_offsets([meshes[n][0] for n in names])
    coords = [display_coords(meshes[n][0], o) for n, o in zip(names, offsets)]
    return coords, mesh3d_layout(names, step, union_box(box, scene_box(coords)))


def mesh3d_figure(meshes: dict[str, tuple[np.ndarray, np.ndarray]], step: int) -> go.Figure:
    """The meshes side by side as a plotly figure (float32 vertices, int32 faces). The page draws the same
    scene through its step-view component (which keeps the camera); this is its fallback and its reference."""
    fig = go.Figure()
    names = list(meshes)
    coords, layout = mesh3d_scene(meshes, step)
    for name, (x, y, z) in zip(names, coords):
        f = np.asarray(meshes[name][1], dtype=np.int32)
        fig.add_trace(go.Mesh3d(x=x, y=y, z=z, i=f[:, 0], j=f[:, 1], k=f[:, 2], color=hex_color(mesh_rgb(name)),
                                name=LABELS[name], flatshading=False, hoverinfo="skip", showscale=False,
                                lighting=MESH_LIGHTING, lightposition=MESH_LIGHT_POSITION))
    if names:
        fig.add_trace(go.Scatter3d(**{k: v for k, v in label_trace(names, coords).items() if k != "type"}))
    fig.update_layout(**layout)
    return fig


# --- the rendered overlays ---------------------------------------------------------------------------
OVERLAY_PX = 192  # resolution of each rendered overlay panel (about its size on the page; cost ∝ pixels)


def overlay_window(vertices: list[np.ndarray], kp2d: np.ndarray, conf: np.ndarray, true_uv: np.ndarray) -> tuple:
    """The square (u0, v0, size) in image pixels that every overlay panel of one step shows: every projected
    vertex of the meshes shown, the observed keypoints and the true ones (rounded: it is part of cache keys)."""
    window = framing_window(vertices, CameraConfig(), points=np.concatenate([kp2d[conf > 0], true_uv]))
    return tuple(round(x, 1) for x in window)



def _image(uri: str, c: int, window: tuple) -> dict:
    u0, v0, size = window
    sfx = "" if c == 1 else str(c)
    return dict(source=uri, xref=f"x{sfx}", yref=f"y{sfx}", x=u0, y=v0, sizex=size, sizey=size, xanchor="left",
                yanchor="top", sizing="stretch", layer="below")


def overlay_title(step: int) -> str:
    return (f"<b>Rendered from the sample's camera</b> at step {step} (pyrender, offscreen), framed on the "
            "meshes; yellow: the observed keypoints")


def overlay_figure(images: dict[str, str | None], kp2d: np.ndarray, conf: np.ndarray, step: int,
                   window: tuple | None = None) -> go.Figure:
    """Each method's offscreen render over the keypoints, from the sample's camera. The axes are image
    pixels; every panel shows ``window`` (u0, v0, size), the square the images were rendered for (default:
    the whole image)."""
    names = list(images)
    n = max(len(names), 1)
    window = window or (0.0, 0.0, float(IMAGE))
    u0, v0, size = window
    fig = make_subplots(1, n, subplot_titles=[LABELS[k] for k in names] or [""], horizontal_spacing=0.01)
    for c, name in enumerate(names, start=1):
        for tr in keypoint_traces(kp2d, conf, None, legend=False):
            fig.add_trace(tr, row=1, col=c)
        if images[name]:
            fig.add_layout_image(_image(images[name], c, window))
        sfx = "" if c == 1 else str(c)
        fig.update_xaxes(range=[u0, u0 + size], row=1, col=c)
        fig.update_yaxes(range=[v0 + size, v0], scaleanchor=f"x{sfx}", scaleratio=1, row=1, col=c)
    fig.update_xaxes(showgrid=False, zeroline=False, showticklabels=False, constrain="domain")
    fig.update_yaxes(showgrid=False, zeroline=False, showticklabels=False, constrain="domain")
    fig.update_layout(height=300, margin=dict(l=4, r=4, t=58, b=4), plot_bgcolor=CANVAS_BG, showlegend=False,
                      uirevision="hmr-overlay", template="plotly_white",
                      title=dict(text=overlay_title(step), font=dict(size=14), x=0.005, xanchor="left", y=0.98,
                                 yanchor="top"))
    fig.update_annotations(font_size=12)
    return fig


def overlay_at(base: dict, images: dict[str, str], step: int, window: tuple) -> dict:
    """``overlay_figure`` as plain JSON, from ``base`` (the same figure without images, as plain JSON):
    building a plotly figure costs more than the rest of a step."""
    u0, v0, size = window
    layout = dict(base["layout"])
    layout["images"] = [_image(uri, c, window) for c, uri in enumerate(images.values(), start=1) if uri]
    for k in list(layout):
        if k.startswith("xaxis"):
            layout[k] = {**layout[k], "range": [u0, u0 + size]}
        elif k.startswith("yaxis"):
            layout[k] = {**layout[k], "range": [v0 + size, v0]}
    layout["title"] = {**layout["title"], "text": overlay_title(step)}
    return {**base, "layout": layout}


# --- per-step curves ---------------------------------------------------------------------------------
def curves_figure(curves: dict[str, dict], step: int) -> go.Figure:
    """Reprojection error, MPJPE and PA-MPJPE per step for each method; the current step is marked."""
    fig = make_subplots(1, 3, subplot_titles=[t for _, t in METRICS], horizontal_spacing=0.06)
    for c, (key, _) in enumerate(METRICS, start=1):
        for name, cur in curves.items():
            y = cur[key]
            fig.add_trace(go.Scatter(x=list(range(len(y))), y=y, mode="lines+markers", marker=dict(size=4),
                                     line=dict(color=line_color(name), width=2), name=LABELS[name], legendgroup=name,
                                     showlegend=c == 1), row=1, col=c)
        names = [n for n in curves if step < len(curves[n][key])]
        fig.add_trace(go.Scatter(x=[step] * len(names), y=[curves[n][key][step] for n in names], mode="markers",
                                 marker=dict(size=11, color=[line_color(n) for n in names], symbol="circle-open",
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
    """``curves_figure`` at ``step`` as plain JSON, from ``base`` (the figure at step 0 as plain JSON): only
    the current-step markers and lines move."""
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


# --- the test-set evaluation -------------------------------------------------------------------------
def evaluation_figure(ev: dict, horizons: dict[str, int] | None = None, bands=None) -> go.Figure:
    """MPJPE and PA-MPJPE per step over a set of samples (``lsr1_core.hmr.compare.evaluate_steps``): each
    method's median (solid), mean (dotted) and, for the methods in ``bands`` (default: all), the interquartile
    band; ``horizons`` (method → K) marks the number of inner steps a learned method was trained for (LGD's
    especially: beyond it, it runs untrained)."""
    bands = ev["order"] if bands is None else list(bands)
    keys = [m for m in METRICS if m[0] != "reproj"]
    fig = make_subplots(1, len(keys), subplot_titles=[t for _, t in keys], horizontal_spacing=0.07)
    for c, (key, _) in enumerate(keys, start=1):
        for name in ev["order"]:
            s = ev["stats"][name][key]
            x = list(range(len(s["median"])))
            col = line_color(name)
            if name in bands:
                fig.add_trace(go.Scatter(x=x + x[::-1], y=list(s["q75"]) + list(s["q25"])[::-1], fill="toself",
                                         fillcolor=with_alpha(col, 0.13), line=dict(width=0), hoverinfo="skip",
                                         legendgroup=name, showlegend=False, name=f"{LABELS[name]} quartiles"),
                              row=1, col=c)
            fig.add_trace(go.Scatter(x=x, y=s["median"], mode="lines+markers", marker=dict(size=4),
                                     line=dict(color=col, width=2), name=LABELS[name], legendgroup=name,
                                     showlegend=c == 1, hovertemplate="step %{x}: median %{y:.1f} mm"),
                          row=1, col=c)
            fig.add_trace(go.Scatter(x=x, y=s["mean"], mode="lines", line=dict(color=col, width=1.5, dash="dot"),
                                     name=f"{LABELS[name]} mean", legendgroup=name, showlegend=False,
                                     hovertemplate="step %{x}: mean %{y:.1f} mm"), row=1, col=c)
        by_k: dict[int, list[str]] = {}
        for name, k in (horizons or {}).items():
            if k:
                by_k.setdefault(int(k), []).append(name)
        for i, (k, names) in enumerate(sorted(by_k.items())):
            fig.add_vline(x=k, line=dict(color=line_color(names[0]), dash="dash", width=1.5), row=1, col=c,
                          annotation=dict(text=f"{', '.join(LABELS[n] for n in names)} trained for {k} steps",
                                          font=dict(size=11, color=line_color(names[0])), yshift=-16 * i),
                          annotation_position="top right")
        fig.update_xaxes(title_text="inner iteration", row=1, col=c)
    fig.update_yaxes(title_text="mm (median solid, mean dotted, band: quartiles)", row=1, col=1)
    fig.update_layout(height=400, margin=dict(l=10, r=10, t=60, b=10), template="plotly_white",
                      legend=dict(orientation="h", y=1.12, yanchor="bottom", x=0))
    return fig


def evaluation_table(ev: dict, steps=(4, None)) -> str:
    """A markdown table: per method, median [quartiles] of PA-MPJPE and MPJPE at the given steps (None: the
    last) and the time per inner step."""
    last = ev["steps"]
    cols = [last if k is None else k for k in steps if (k is None or k <= last)]
    cols = list(dict.fromkeys(cols))
    head = "| method | " + " | ".join(f"PA-MPJPE step {k}" for k in cols) + " | " + \
        " | ".join(f"MPJPE step {k}" for k in cols) + " | ms per step |"
    lines = [head, "|---|" + "---:|" * (2 * len(cols) + 1)]
    for name in ev["order"]:
        st = ev["stats"][name]
        cells = [f"{st[m]['median'][k]:.1f} [{st[m]['q25'][k]:.1f}–{st[m]['q75'][k]:.1f}]"
                 for m in ("pa_mpjpe", "mpjpe") for k in cols]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + f" | {1000 * ev['seconds_per_step'][name]:.0f} |")
    return "\n".join(lines)


# --- several samples side by side --------------------------------------------------------------------
def sample_grid_figure(rows: list[dict], names: list[str], step: int) -> go.Figure:
    """One row per sample, one column per method (and the ground truth): each method's render over the
    sample's keypoints. ``rows``: per sample ``{"title", "kp2d", "conf", "window", "images": {name: uri},
    "pa_mpjpe": {name: mm}}``; a row's panels share its window (u0, v0, size), framed on its meshes."""
    n_r, n_c = max(len(rows), 1), max(len(names), 1)
    titles = [f"{r['title']} · {LABELS[n]}" + (f" · {r['pa_mpjpe'][n]:.0f} mm" if n in r.get("pa_mpjpe", {}) else "")
              for r in rows for n in names]
    fig = make_subplots(n_r, n_c, subplot_titles=titles or [""], horizontal_spacing=0.01,
                        vertical_spacing=0.16 / n_r)
    for i, r in enumerate(rows):
        u0, v0, size = r["window"]
        for j, name in enumerate(names):
            c = i * n_c + j + 1
            for tr in keypoint_traces(r["kp2d"], r["conf"], None, legend=False, size=5.0):
                fig.add_trace(tr, row=i + 1, col=j + 1)
            if r["images"].get(name):
                fig.add_layout_image(_image(r["images"][name], c, r["window"]))
            sfx = "" if c == 1 else str(c)
            fig.update_xaxes(range=[u0, u0 + size], row=i + 1, col=j + 1)
            fig.update_yaxes(range=[v0 + size, v0], scaleanchor=f"x{sfx}", scaleratio=1, row=i + 1, col=j + 1)
    fig.update_xaxes(showgrid=False, zeroline=False, showticklabels=False, constrain="domain")
    fig.update_yaxes(showgrid=False, zeroline=False, showticklabels=False, constrain="domain")
    fig.update_layout(height=60 + 250 * n_r, margin=dict(l=4, r=4, t=60, b=4), plot_bgcolor=CANVAS_BG,
                      showlegend=False, template="plotly_white",
                      title=dict(text=f"<b>Several samples</b> at step {step}: renders from each sample's camera, "
                                      "PA-MPJPE in each title", font=dict(size=14), x=0.005, xanchor="left"))
    fig.update_annotations(font=dict(size=12, color="#222"), yshift=6)
    return fig
