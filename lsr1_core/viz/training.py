"""Figures for meta-training runs (pure: data in, plotly figure out)."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .palette import colors_for

SERIES = (("meta_loss", "training meta-loss", 1), ("val_loss", "validation meta-loss", 1),
          ("secant_rel", "training secant residual", 2), ("val_secant_rel", "validation secant residual", 2))
# an HMR run (lsr1_core.hmr.train): its validation "loss" is the PA-MPJPE after K steps, in millimetres
HMR_SERIES = (("meta_loss", "training meta-loss", 1), ("val_meta_loss", "validation meta-loss", 1),
              ("val_pa_mpjpe", "validation PA-MPJPE (mm)", 2))
# a scalar run (lsr1_core.meta.scalar_problem): the budget meta-loss (a mean log10 gap, negative) and the learned
# scalars at each validation
SCALAR_SERIES = (("meta_loss", "training meta-loss (ES estimate)", 1), ("val_loss", "validation meta-loss", 1),
                 ("val_diag", "β (diagonal metric)", 2), ("val_gamma_factor", "γ factor", 2),
                 ("val_diag_decay", "metric decay", 2))
PANELS = {"lsr1": (SERIES, ("meta-loss", "relative secant residual ‖p − B̃q‖/‖p‖"), (True, True)),
          "hmr": (HMR_SERIES, ("meta-loss (Eq. 13)", "validation PA-MPJPE after K steps (mm)"), (True, False)),
          "scalars": (SCALAR_SERIES, ("budget meta-loss: mean best log10 gap (lower is better)", "learned scalars"),
                      (False, False))}
OTHER_COLORS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _points(metrics: list[dict], key: str) -> list[tuple]:
    return [(m["iteration"], m[key]) for m in metrics
            if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]


def smooth(y, window: int) -> np.ndarray:
    """Running median over ``window`` points (centred, shorter at the ends): spikes of single meta-iterations
    do not hide the trend."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) < 3:
        return y
    h = window // 2
    return np.array([np.median(y[max(0, i - h):i + h + 1]) for i in range(len(y))])


def _log_ok(values) -> bool:
    return len(values) > 0 and all(v > 0 for v in values)


def training_curves(metrics: list[dict], title: str = "", kind: str = "lsr1") -> go.Figure:
    """Meta-loss (training, validation) and relative secant residual against iteration, on log scales (the
    meta-loss spans decades and single iterations spike); the raw training curve is faint, its running median
    drawn over it. ``kind="hmr"``: an HMR run's meta-loss and validation PA-MPJPE (linear, mm)."""
    series, titles, log_cols = PANELS.get(kind, PANELS["lsr1"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    colors = {"training": "#1f77b4", "validation": "#d62728"}
    logs = {1: log_cols[0], 2: log_cols[1]}
    for key, name, col in series:
        data = _points(metrics, key)
        xs, ys = [d[0] for d in data], [d[1] for d in data]
        logs[col] = logs[col] and (not ys or _log_ok(ys))
        color = colors.get(name.split()[0]) or OTHER_COLORS[[k for k, *_ in series].index(key) % len(OTHER_COLORS)]
        if name.startswith("training") and len(ys) > 20:
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name + " (raw)", mode="lines", opacity=0.25,
                                     line=dict(color=color, width=1), legendgroup=name, showlegend=False),
                          row=1, col=col)
            ys = smooth(ys, max(3, len(ys) // 50)).tolist()
            name = name + " (running median)"
        fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines" if name.startswith("training") else
                                 "lines+markers", line=dict(color=color), legendgroup=name), row=1, col=col)
    for col, log in logs.items():
        if log:
            fig.update_yaxes(type="log", exponentformat="power", row=1, col=col)
    fig.update_xaxes(title_text="meta-iteration")
    fig.update_layout(title=title, height=360, margin=dict(l=50, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def overlay_curves(runs: dict[str, list[dict]], key: str = "val_loss", smooth_window: int | None = None,
                   log_x: bool = False) -> go.Figure:
    """Several runs' curves of one metric overlaid (one colour per run, the palette's), log y (and optionally
    log x); training metrics are smoothed by a running median."""
    fig = go.Figure()
    cols = colors_for(runs)
    all_y = []
    for name, metrics in runs.items():
        data = _points(metrics, key)
        xs, ys = [d[0] for d in data], [d[1] for d in data]
        if not ys:
            continue
        if not key.startswith("val"):
            ys = smooth(ys, smooth_window or max(3, len(ys) // 50)).tolist()
        all_y += ys
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, line=dict(color=cols[name], width=2)))
    label = dict(SERIES_LABELS).get(key, key)
    fig.update_layout(xaxis_title="meta-iteration", yaxis_title=label, height=400,
                      margin=dict(l=60, r=10, t=40, b=40), legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    if _log_ok(all_y):
        fig.update_yaxes(type="log", exponentformat="power")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


SERIES_LABELS = tuple((k, n) for k, n, _ in SERIES)
