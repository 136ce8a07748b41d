"""Figures for meta-training runs (pure: data in, plotly figure out)."""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def training_curves(metrics: list[dict], title: str = "") -> go.Figure:
    """Meta-loss (training), validation meta-loss and relative secant residual against iteration."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("meta-loss", "relative secant residual ‖p − B̃q‖/‖p‖"))
    tr = [(m["iteration"], m["meta_loss"]) for m in metrics
          if isinstance(m.get("meta_loss"), (int, float)) and math.isfinite(m["meta_loss"])]
    va = [(m["iteration"], m["val_loss"]) for m in metrics
          if isinstance(m.get("val_loss"), (int, float)) and math.isfinite(m["val_loss"])]
    se = [(m["iteration"], m["secant_rel"]) for m in metrics
          if isinstance(m.get("secant_rel"), (int, float)) and math.isfinite(m["secant_rel"])]
    sv = [(m["iteration"], m["val_secant_rel"]) for m in metrics
          if isinstance(m.get("val_secant_rel"), (int, float)) and math.isfinite(m["val_secant_rel"])]
    for data, name, col, color, mode in ((tr, "training meta-loss", 1, "#1f77b4", "lines"),
                                         (va, "validation meta-loss", 1, "#d62728", "lines+markers"),
                                         (se, "training secant residual", 2, "#1f77b4", "lines"),
                                         (sv, "validation secant residual", 2, "#d62728", "lines+markers")):
        fig.add_trace(go.Scatter(x=[d[0] for d in data], y=[d[1] for d in data], name=name, mode=mode,
                                 line=dict(color=color)), row=1, col=col)
    fig.update_xaxes(title_text="meta-iteration")
    fig.update_layout(title=title, height=360, margin=dict(l=40, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=-0.25))
    return fig
