"""Pure figure builders for the explorer (data in, plotly figure out; testable via fig.to_dict())."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch

from ..trace import Trace
from .palette import color_for, colors_for

BUFFER_COLOR = "#00a087"  # L-SR1's buffer vectors v_i (no solver has this colour)
POINT_COLOR = "#ffd700"   # the current point x_k (gold, black outline, like the minimum's star)


def _grid_values(obj, bounds, n=120):
    (x0, x1), (y0, y1) = bounds
    xs = np.linspace(x0, x1, n)
    ys = np.linspace(y0, y1, n)
    X, Y = np.meshgrid(xs, ys)
    pts = torch.tensor(np.stack([X.ravel(), Y.ravel()], 1), dtype=torch.float64)
    with torch.no_grad():
        Z = obj.value(pts).numpy().reshape(n, n)
    return xs, ys, Z


def _path(tr: Trace) -> np.ndarray:
    """(T+1, 2) iterates of row 0, cut after divergence (the row is frozen there)."""
    xy = tr.x[:, 0, :2].double().cpu().numpy()
    k = int(tr.diverged_at[0])
    return xy[:k] if k >= 0 else xy


MAX_FRAMES = 61


def _compact(a: np.ndarray) -> np.ndarray:
    """float32 (half the bytes in the page) unless a diverging path holds values float32 cannot."""
    return a.astype(np.float32) if a.size == 0 or float(np.abs(a).max()) < 1e30 else a


def frame_steps(T: int, step: int, max_frames: int | None = None) -> list[int]:
    """The steps that get an animation frame: every step up to ``max_frames``, else an even stride that
    always includes 0, T and the current step (the figure's size grows with frames × T)."""
    max_frames = max_frames or MAX_FRAMES
    if T + 1 <= max_frames:
        return list(range(T + 1))
    stride = math.ceil(T / (max_frames - 1))
    shown = set(range(0, T + 1, stride)) | {T, step}
    return sorted(shown)


def trajectory_figure(obj, traces: dict[str, Trace], bounds, step: int | None = None, animate: bool = True,
                      title: str = "", redraw: bool = True) -> go.Figure:
    """Contour of ``obj`` with one path per solver; the current step is a large marker.

    With ``animate`` the figure carries one frame per step, a play/pause button and a step slider. Frames are
    drawn with ``redraw`` (default True): plotly.js 4 deletes the contour layer when it animates a subplot's
    scatter traces with redraw off.
    A diverged solver's path stops at its last finite point, marked with an ✕ and "(diverged at k)".
    """
    xs, ys, Z = _grid_values(obj, bounds)
    zmin = float(np.nanmin(Z))
    fig = go.Figure()
    fig.add_trace(go.Contour(x=xs.astype(np.float32), y=ys.astype(np.float32),
                             z=np.log10(Z - zmin + 1e-3).astype(np.float32), colorscale="Greys", showscale=False,
                             contours=dict(coloring="heatmap", showlines=True), opacity=0.55, hoverinfo="skip",
                             name="log10(f − min + 1e-3)"))
    paths = {lab: _path(tr) for lab, tr in traces.items()}
    T = max((tr.steps for tr in traces.values()), default=0)
    step = T if step is None else max(0, min(step, T))
    line_idx = []
    cols = colors_for(traces)
    for i, (lab, tr) in enumerate(traces.items()):
        p = paths[lab]
        k = min(step, len(p) - 1)
        div = int(tr.diverged_at[0])
        name = lab + (f" (diverged at step {div})" if div >= 0 else "")
        line_idx.append(len(fig.data))
        fig.add_trace(go.Scatter(x=p[:k + 1, 0], y=p[:k + 1, 1], mode="lines+markers", name=name,
                                 line=dict(color=cols[lab], width=2), marker=dict(size=4), legendgroup=lab))
        fig.add_trace(go.Scatter(x=[p[k, 0]], y=[p[k, 1]], mode="markers", showlegend=False, legendgroup=lab,
                                 marker=dict(color=cols[lab], size=13, line=dict(color="white", width=2),
                                             symbol="x" if (div >= 0 and step >= div) else "circle"),
                                 name=f"{lab} @ step {k}"))
    minima = getattr(obj, "minima", ())
    if minima:
        fig.add_trace(go.Scatter(x=[m[0] for m in minima], y=[m[1] for m in minima], mode="markers",
                                 marker=dict(symbol="star", size=14, color="gold", line=dict(color="black", width=1)),
                                 name="minimum"))
    if animate and T > 0:
        shown = frame_steps(T, step)
        idx = [j for li in line_idx for j in (li, li + 1)]
        frames = []
        for s in shown:
            data = []
            for i, (lab, tr) in enumerate(traces.items()):
                p = paths[lab]
                k = min(s, len(p) - 1)
                div = int(tr.diverged_at[0])
                # Plain dicts and float32 coordinates: plotly validates and base64-encodes every frame, and the
                # browser parses all of them, so both the build time and the page size scale with frames × T.
                data.append(dict(type="scatter", x=_compact(p[:k + 1, 0]), y=_compact(p[:k + 1, 1])))
                # Only x, y (and the symbol, which changes for a diverged solver): the colour and size come
                # from the figure's trace; every extra property costs validation time × frames × solvers.
                data.append(dict(type="scatter", x=p[k:k + 1, 0], y=p[k:k + 1, 1],
                                 marker=dict(symbol="x" if (div >= 0 and s >= div) else "circle")))
            frames.append(dict(data=data, traces=idx, name=str(s)))
        fig.frames = frames
        fig.update_layout(
            updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.08, xanchor="left", yanchor="top",
                              buttons=[dict(label="▶ play", method="animate",
                                            args=[None, dict(frame=dict(duration=60, redraw=redraw), fromcurrent=True,
                                                             transition=dict(duration=0))]),
                                       dict(label="❚❚ pause", method="animate",
                                            args=[[None], dict(frame=dict(duration=0, redraw=redraw), mode="immediate")])])],
            sliders=[dict(active=shown.index(step), x=0.15, len=0.85, y=-0.05, currentvalue=dict(prefix="step "),
                          steps=[dict(label=str(s), method="animate",
                                      args=[[str(s)], dict(mode="immediate", frame=dict(duration=0, redraw=redraw))])
                                 for s in shown])])
    (x0, x1), (y0, y1) = bounds
    fig.update_layout(title=dict(text=title, y=0.99) if title else None,
                      xaxis=dict(range=[x0, x1], title="x₁"), yaxis=dict(range=[y0, y1], title="x₂"),
                      height=580, margin=dict(l=40, r=10, t=90 if title else 60, b=90),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    return fig


def objective_figure(traces: dict[str, Trace], f_star: float | None, step: int | None = None) -> go.Figure:
    """f(x_k) − f* (or f when f* is unknown) against iteration, log scale; a dashed line at the step.

    The log axis stops at 10⁴ × the largest starting gap, so one diverging solver (whose values reach 1e100
    before they become non-finite) does not squash every other curve into a line; its legend entry says so.
    """
    fig = go.Figure()
    starts, lows = [], []
    cols = colors_for(traces)
    for i, (lab, tr) in enumerate(traces.items()):
        f = tr.f[:, 0].double().cpu().numpy()
        div = int(tr.diverged_at[0])
        if div >= 0:
            f = f[:div]
        y = f - f_star if f_star is not None else f
        y = np.maximum(y, 1e-16) if f_star is not None else y
        if f_star is not None and len(y):
            starts.append(float(y[0]))
            lows.append(float(np.nanmin(y)))
        name = lab + (f" (diverged at step {div})" if div >= 0 else "")
        fig.add_trace(go.Scatter(x=np.arange(len(y)), y=y, mode="lines", name=name, line=dict(color=cols[lab]),
                                 legendgroup=lab))
    if step is not None:
        fig.add_vline(x=step, line_dash="dash", line_color="gray")
    # automargin and a standoff: the power-format tick labels (10⁻¹⁶) are wide and sat under the title
    fig.update_layout(xaxis_title="iteration", yaxis_title="f(x) − f*" if f_star is not None else "f(x)",
                      yaxis_type="log" if f_star is not None else "linear", height=420,
                      margin=dict(l=60, r=10, t=60, b=40), legend=dict(orientation="h", yanchor="bottom", y=1.02))
    fig.update_yaxes(automargin=True, title_standoff=10)
    if starts:
        top = math.log10(max(starts) * 1e4)
        bottom = math.log10(max(min(lows), 1e-16)) - 0.5
        fig.update_yaxes(range=[bottom, top], exponentformat="power")
    return fig


def player_figures(obj, traces: dict[str, Trace], f_star: float | None, bounds, title: str = "") -> dict:
    """What the explorer's trajectory player needs to scrub every step in the browser without a server round
    trip: the contour-and-paths figure and the objective figure drawn at the last step (no animation frames),
    one "current step" marker per solver and a step line on the objective figure, and per solver the finite
    path and objective values the player slices (``x``, ``y``, ``f``: lists; ``div``: diverged-at step or -1).

    Trace indices: ``line`` / ``marker`` in the trajectory figure, ``omarker`` in the objective figure,
    ``vline`` (the step line) in the objective figure. ``T`` is the number of steps of the longest run.
    """
    T = max((tr.steps for tr in traces.values()), default=0)
    traj = trajectory_figure(obj, traces, bounds, step=T, animate=False, title=title)
    objf = objective_figure(traces, f_star, step=None)
    solvers = []
    log = objf.layout.yaxis.type == "log"
    finite = []
    cols = colors_for(traces)
    for i, (lab, tr) in enumerate(traces.items()):
        line = next(j for j, t in enumerate(traj.data) if t.legendgroup == lab and t.mode == "lines+markers")
        curve = next(j for j, t in enumerate(objf.data) if t.legendgroup == lab)
        p = _path(tr)
        f = np.asarray(objf.data[curve].y, dtype=float)
        finite += [v for v in f if math.isfinite(v) and (v > 0 or not log)]
        k = len(f) - 1
        objf.add_trace(go.Scatter(x=[k] if k >= 0 else [], y=[f[k]] if k >= 0 else [], mode="markers",
                                  showlegend=False, legendgroup=lab, hoverinfo="skip", name=f"{lab} @ step",
                                  marker=dict(color=cols[lab], size=11, line=dict(color="white", width=2))))
        solvers.append({"label": lab, "line": line, "marker": line + 1, "omarker": len(objf.data) - 1,
                        "x": [float(v) for v in p[:, 0]], "y": [float(v) for v in p[:, 1]],
                        "f": [float(v) for v in f], "div": int(tr.diverged_at[0])})
    # The step line is a trace (not a shape) so the player moves it with the same cheap update as the markers;
    # its ends sit on the axis range, fixed here so that moving it never rescales the axis.
    rng = objf.layout.yaxis.range
    if rng is None:
        lo, hi = (min(finite), max(finite)) if finite else (1e-3 if log else 0.0, 1.0)
        if log:
            lo, hi = math.log10(lo) - 0.2, math.log10(hi) + 0.2
        else:
            pad = 0.05 * (hi - lo) or 1.0
            lo, hi = lo - pad, hi + pad
        objf.update_yaxes(range=[lo, hi])
    else:
        lo, hi = rng
    ends = [10 ** lo, 10 ** hi] if log else [lo, hi]
    objf.add_trace(go.Scatter(x=[T, T], y=ends, mode="lines", showlegend=False, hoverinfo="skip", name="step",
                              line=dict(color="gray", dash="dash", width=1)))
    objf.update_xaxes(range=[-0.02 * max(T, 1), T * 1.02 + 0.02])
    return {"traj": traj, "obj": objf, "solvers": solvers, "vline": len(objf.data) - 1, "T": T}


def series_figure(series: dict[str, np.ndarray], step: int | None, ytitle: str, log: bool = False,
                  yrange=None) -> go.Figure:
    """One line per solver of a per-step quantity (steps numbered from 1); dashed line at the step."""
    fig = go.Figure()
    cols = colors_for(series)
    for i, (lab, y) in enumerate(series.items()):
        y = np.asarray(y, dtype=float)
        if np.all(~np.isfinite(y)):
            continue
        fig.add_trace(go.Scatter(x=np.arange(1, len(y) + 1), y=y, mode="lines+markers", name=lab,
                                 marker=dict(size=4), line=dict(color=cols[lab])))
    if step is not None and step > 0:
        fig.add_vline(x=step, line_dash="dash", line_color="gray")
    # Legend above the plotting area (not over it: cosines sit at 1, where a legend would hide them);
    # powers of ten rather than SI prefixes (1f, 1p) on log axes.
    fig.update_layout(xaxis_title="step", yaxis_title=ytitle, yaxis_type="log" if log else "linear", height=360,
                      margin=dict(l=40, r=10, t=70, b=40), legend=dict(orientation="h", yanchor="bottom", y=1.02))
    if log:
        fig.update_yaxes(exponentformat="power")
    if yrange:
        fig.update_yaxes(range=yrange)
    return fig


EVENT_SYMBOLS = {"converged": "star-open", "restart": "x", "entered as a BFGS update": "diamond", "skipped": "circle-open",
                 "the step was lengthened": "triangle-up"}


def mark_events(fig: go.Figure, label: str, y: np.ndarray, notes: dict[int, str]) -> go.Figure:
    """Marks on ``label``'s line of a :func:`series_figure` at the steps (0-based k, drawn at k + 1) with a note,
    one marker trace per kind of event, the note as hover text."""
    y = np.asarray(y, dtype=float)
    col = color_for(label)
    for key, symbol in EVENT_SYMBOLS.items():
        ks = [k for k, n in notes.items() if n.startswith(key) and k < len(y) and np.isfinite(y[k])]
        if not ks:
            continue
        fig.add_trace(go.Scatter(x=[k + 1 for k in ks], y=[y[k] for k in ks], mode="markers",
                                 name=f"{label}: {key.replace('entered as a ', '').replace('the step was ', '')}",
                                 marker=dict(symbol=symbol, size=11, color=col, line=dict(width=2, color=col)),
                                 hovertext=[notes[k] for k in ks], hoverinfo="text"))
    return fig


def _pair_colors(label: str) -> tuple[str, str]:
    """(colour of the solver's B, colour of the true inverse Hessian): Newton's colour for H⁻¹ (it is
    Newton's matrix), grey-blue when the solver is Newton itself."""
    b = color_for(label)
    h = color_for("newton")
    return b, ("#6b6ecf" if h == b else h)


def spectra_figure(spec: dict, label: str, step: int | None = None) -> go.Figure:
    """Eigenvalues of the solver's B_k and of the true inverse Hessian at x_k, against step."""
    fig = go.Figure()
    xa, ya, xt, yt = [], [], [], []
    for s, a, t in zip(spec["steps"], spec["approx"], spec["true"]):
        xa += [s] * len(a)
        ya += list(a)
        xt += [s] * len(t)
        yt += list(t)
    b_col, h_col = _pair_colors(label)
    fig.add_trace(go.Scatter(x=xa, y=ya, mode="markers", name=f"eig B_k ({label})",
                             marker=dict(color=b_col, size=7)))
    fig.add_trace(go.Scatter(x=xt, y=yt, mode="markers", name="eig true H⁻¹(x_k)",
                             marker=dict(color=h_col, size=7, symbol="diamond-open")))
    if step is not None and step > 0:
        fig.add_vline(x=step, line_dash="dash", line_color="gray")
    logy = all(v > 0 for v in ya + yt) and len(ya + yt) > 0
    fig.update_layout(xaxis_title="step", yaxis_title="eigenvalue", yaxis_type="log" if logy else "linear",
                      height=330, margin=dict(l=40, r=10, t=30, b=40), legend=dict(orientation="h", y=1.15))
    return fig


def _ellipse(M: np.ndarray, center: np.ndarray, scale: float, n: int = 80):
    """Boundary of {c + scale·M u : |u| = 1} for symmetric M (axes along eigenvectors, lengths |λ|)."""
    w, V = np.linalg.eigh(0.5 * (M + M.T))
    t = np.linspace(0, 2 * math.pi, n)
    circ = np.stack([np.cos(t), np.sin(t)])
    pts = V @ np.diag(np.abs(w)) @ circ * scale
    return center[:, None] + pts, w, V


def ellipse_figure(obj, bounds, point: np.ndarray, approx: np.ndarray | None, true_inv: np.ndarray,
                   buffer: np.ndarray | None = None, label: str = "B̃", label_solver: str | None = None) -> go.Figure:
    """At the current point: the true inverse Hessian and the solver's B as ellipses (axes = eigenvectors
    scaled by |eigenvalue|; a negative eigenvalue's axis is drawn dashed red), the buffer vectors as arrows.
    Both ellipses share one scale so their sizes compare."""
    xs, ys, Z = _grid_values(obj, bounds, n=80)
    zmin = float(np.nanmin(Z))
    fig = go.Figure(go.Contour(x=xs, y=ys, z=np.log10(Z - zmin + 1e-3), colorscale="Greys", showscale=False,
                               opacity=0.35, hoverinfo="skip", contours=dict(coloring="heatmap")))
    b_col, h_col = _pair_colors(label_solver or label)
    mats = [(true_inv, "true H⁻¹ (Newton)", h_col)] + ([(approx, label, b_col)] if approx is not None else [])
    mats = [(m, n, c) for m, n, c in mats if m is not None and np.isfinite(m).all()]
    span = min(bounds[0][1] - bounds[0][0], bounds[1][1] - bounds[1][0])
    sizes = [float(np.abs(np.linalg.eigvalsh(0.5 * (m + m.T))).max()) for m, _, _ in mats]
    biggest = max(sizes, default=1.0)
    # One shared scale so sizes compare, unless one ellipse would be a dot next to the other (Rosenbrock's
    # H⁻¹ is 1e-3 where B is 1): then each is drawn at its own scale and its legend entry says by how much.
    own = len(sizes) == 2 and min(sizes) > 0 and max(sizes) / min(sizes) > 50
    scale = 0.3 * span / max(biggest, 1e-12)
    for (M, name, col), size in zip(mats, sizes):
        sc = 0.3 * span / max(size, 1e-300) if own else scale
        pts, w, V = _ellipse(M, point, sc)
        fig.add_trace(go.Scatter(x=pts[0], y=pts[1], mode="lines", line=dict(color=col, width=3),
                                 name=name + (f" (drawn ×{sc:.2g})" if own else "")))
        for j in range(2):
            a = V[:, j] * abs(w[j]) * sc
            fig.add_trace(go.Scatter(x=[point[0] - a[0], point[0] + a[0]], y=[point[1] - a[1], point[1] + a[1]],
                                     mode="lines", showlegend=False,
                                     line=dict(color="red" if w[j] < 0 else col, width=2,
                                               dash="dash" if w[j] < 0 else "dot")))
    if buffer is not None:
        for j, v in enumerate(buffer):
            vv = v * scale * 0.5
            fig.add_annotation(x=point[0] + vv[0], y=point[1] + vv[1], ax=point[0], ay=point[1], xref="x", yref="y",
                               axref="x", ayref="y", showarrow=True, arrowhead=2, arrowwidth=2,
                               arrowcolor=BUFFER_COLOR, text="")
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=BUFFER_COLOR),
                                 name=f"buffer vectors v (×{0.5 * scale:.2g})"))
    fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name="current point",
                             marker=dict(color=POINT_COLOR, size=10, line=dict(color="black", width=1))))
    (x0, x1), (y0, y1) = bounds
    fig.update_layout(xaxis=dict(range=[x0, x1]), yaxis=dict(range=[y0, y1], scaleanchor="x", scaleratio=1),
                      height=460, margin=dict(l=40, r=10, t=30, b=40), legend=dict(orientation="h", y=1.1))
    return fig


def profile_figure(taus, profile: dict[str, list], auc: dict[str, float] | None = None,
                   names: dict[str, str] | None = None, tau_max: float = 1e4) -> go.Figure:
    """Dolan-Moré performance profiles ρ_s(τ) as step lines, log τ axis."""
    fig = go.Figure()
    order = sorted(profile, key=lambda s: -(auc or {}).get(s, 0.0))
    cols = colors_for(order)
    for i, s in enumerate(order):
        lab = (names or {}).get(s, s) + (f" (area {auc[s]:.2f})" if auc and s in auc else "")
        fig.add_trace(go.Scatter(x=list(taus), y=list(profile[s]), mode="lines", line_shape="hv", name=lab,
                                 line=dict(color=cols[s], width=2)))
    fig.update_layout(xaxis_type="log", xaxis_title="τ", yaxis_title="fraction of problems with ratio ≤ τ",
                      yaxis_range=[0, 1.03], height=430, margin=dict(l=40, r=10, t=30, b=40))
    taus = np.asarray(list(taus), dtype=float)
    if taus.size and taus.max() > tau_max:
        # Ratios of a failing solver can reach 1e150; on such an axis the region where solvers differ
        # (τ between 1 and 10) is a few pixels wide. The areas in the legend use the full range.
        fig.update_xaxes(range=[math.log10(max(taus.min(), 1.0)), math.log10(tau_max)], exponentformat="power")
        fig.add_annotation(text=f"τ axis cut at {tau_max:g}; curves that rise later are off to the right",
                           xref="paper", yref="paper", x=1, y=0.02, xanchor="right", showarrow=False,
                           font=dict(size=11, color="gray"))
    return fig


def convergence_figure(results: dict, buffer: int) -> go.Figure:
    """Median gap f(x_k) − f* with its 25–75 % band on the test quadratics, per solver, for one buffer size."""
    row = results["buffers"][str(buffer)] if str(buffer) in results["buffers"] else results["buffers"][buffer]
    fig = go.Figure()
    names = {"lsr1": "L-SR1", "lsr1_nosec": "L-SR1 w/o secant", "lbfgs": "L-BFGS"}
    series = dict(row)
    if "gd" in results:
        series["gd"] = results["gd"]
        names["gd"] = f"GD (lr {results['gd'].get('lr')})"
    cols = colors_for(series)
    for i, (lab, s) in enumerate(series.items()):
        y = np.clip(np.array(s["gap_median"], dtype=float), 1e-16, None)
        x = np.arange(len(y))
        col = cols[lab]
        if "gap_q25" in s:
            fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]),
                                     y=np.concatenate([np.clip(s["gap_q75"], 1e-16, None),
                                                       np.clip(s["gap_q25"], 1e-16, None)[::-1]]),
                                     fill="toself", line=dict(width=0), fillcolor=col, opacity=0.15,
                                     showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=names.get(lab, lab), line=dict(color=col, width=2)))
    fig.update_layout(yaxis_type="log", xaxis_title="iteration", yaxis_title="median f(x_k) − f*", height=400,
                      margin=dict(l=40, r=10, t=30, b=40), title=f"L = {buffer}")
    return fig
