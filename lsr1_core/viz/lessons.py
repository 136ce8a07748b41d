"""Two lessons of the explorer, computed and drawn (pure: data in, numbers or a plotly figure out).

*Anatomy of one update*: for one solver and one step of a 2-D run, B_k → B_{k+1}: p, q, w = p − B_k q, SR1's
rank-one term w wᵀ/(wᵀq), and the secant check B_{k+1} q = p beside Newton's H⁻¹, drawn as arrows and
ellipses on the contour. (B is the inverse-Hessian approximation throughout, as in the paper: d = B g.)

*Why PSD matters, drawn*: classical SR1's first uphill step next to L-SR1's step from the same point.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from ..objectives import teaching_function
from ..solvers import make_solver, run
from ..device import single_thread
from ..errors import LSR1Error
from ..learned import LSR1Solver
from .explore import operator_matrix, true_inverse_hessian
from .palette import color_for
from .plots import POINT_COLOR, _ellipse, _grid_values

STEP_COLOR = "#e7298a"  # the step p (magenta: no solver has it)

SECANT_OK = 1e-6  # relative residual below which the secant condition counts as satisfied


def anatomy(tr, obj, k: int) -> dict:
    """The update at step k (x_k → x_{k+1}, 0-based) of row 0 of trace ``tr``: p, q, B_k, w = p − B_k q, wᵀq,
    the SR1 rank-one term w wᵀ/(wᵀq) and B_k + that term (which satisfies the secant condition by
    construction), the solver's own B_{k+1} (None after the last step) with B_{k+1} q and its relative
    residual, and Newton's H⁻¹ at x_{k+1}."""
    if not 0 <= k < tr.steps:
        raise ValueError(f"step {k} outside 0..{tr.steps - 1}")
    x0, x1 = tr.x[k, 0].double().numpy(), tr.x[k + 1, 0].double().numpy()
    p = x1 - x0
    q = (tr.g[k + 1, 0] - tr.g[k, 0]).double().numpy()
    Bk = operator_matrix(tr, k)
    Bn = operator_matrix(tr, k + 1)
    out = {"k": k, "x": x0, "x_next": x1, "p": p, "q": q, "B": Bk, "B_next": Bn,
           "H_inv": true_inverse_hessian(obj, tr.x[k + 1]), "w": None, "wq": None, "rank_one": None,
           "B_sr1": None, "Bq_next": None, "residual": None, "p_norm": float(np.linalg.norm(p))}
    if Bk is not None:
        w = p - Bk @ q
        wq = float(w @ q)
        out.update(w=w, wq=wq)
        if abs(wq) > 1e-12 * max(np.linalg.norm(w) * np.linalg.norm(q), 1e-300):
            out["rank_one"] = np.outer(w, w) / wq
            out["B_sr1"] = Bk + out["rank_one"]
    if Bn is not None and out["p_norm"] > 0:
        Bq = Bn @ q
        out.update(Bq_next=Bq, residual=float(np.linalg.norm(p - Bq) / out["p_norm"]))
    return out


def _flag(tr, key: str, j: int) -> bool:
    v = tr.extras.get(key)
    return v is not None and 0 <= j < v.shape[0] and bool(v[j, 0] > 0)


def pair_note(tr, k: int) -> str | None:
    """One line on what the qn form did with the pair (p_k, q_k) of step k → k+1 (0-based, row 0), or None where
    it entered as an SR1 update (or the solver records no such marks). The pair is added by the next step's
    update (extras at k + 1); a restart after step k + 1 is marked at k."""
    notes = []
    if k + 1 < tr.g.shape[0] and tr.g.shape[0] == tr.steps + 1:
        eps = torch.finfo(tr.g.dtype).eps
        # both ends of the pair at the rounding level of the start's gradient (‖g_k‖, and so ‖g_{k+1}‖ too)
        g0, gk = float(tr.g[0, 0].norm()), float(tr.g[k, 0].norm())
        if g0 > 0 and gk <= eps * g0:
            return ("converged: ‖gₖ‖ is below the rounding level of ‖g₀‖, so x sits at the minimiser to machine "
                    "precision; p and q are rounding noise (their products can underflow), so the residual says "
                    "nothing here — a tolerance (gtol) would have stopped the run")
    if _flag(tr, "restarted", k):
        notes.append("restart: the line search needed its extended search or found no step, so the memory was "
                     "forgotten and B_{k+1} starts again from this pair (or a new probe) with a new scale")
    elif _flag(tr, "bfgs", k + 1):
        notes.append("entered as a BFGS update: SR1's update would have made B indefinite (wᵀq ≤ 0), BFGS's keeps "
                     "it positive definite and still satisfies B_{k+1}q = p")
    elif _flag(tr, "skipped", k + 1):
        notes.append("skipped: SR1's update would have made B indefinite and pᵀq ≤ 0 rules out BFGS's too, so "
                     "B_{k+1} ignores this step (large residual)")
    if _flag(tr, "lengthened", k):
        notes.append("the step was lengthened (f still fell steeply at the end of the full step)")
    return "; ".join(notes) if notes else None


def pair_notes(tr) -> dict[int, str]:
    """{step k (0-based): note} for every step with a note (see :func:`pair_note`)."""
    out = {}
    for k in range(tr.steps):
        n = pair_note(tr, k)
        if n:
            out[k] = n
    return out


def secant_verdict(a: dict) -> str:
    """One sentence: is B_{k+1} q = p satisfied at this step?"""
    if a["p_norm"] == 0:
        return "p = 0: the solver did not move, so the secant condition says nothing at this step."
    if a["residual"] is None:
        return "There is no $B_{k+1}$ (this was the run's last step, or the solver keeps no matrix)."
    if a["residual"] < SECANT_OK:
        return (f"Satisfied: $B_{{k+1}} q = p$ up to {a['residual']:.1e} (relative): the new matrix maps this "
                "gradient change exactly onto this step, as a quasi-Newton update is built to.")
    return (f"Violated: $\\|p - B_{{k+1}} q\\| / \\|p\\|$ = {a['residual']:.3g}. The matrix did not learn from "
            "this step "
            "(gradient descent keeps B = I, its step lr·g, whatever the curvature) or learned only approximately.")


def _arrow(fig, x0, x1, color, name, dash=None):
    """An arrow x0 → x1 as a line trace with an arrow-head marker (clipped by the axes like any line)."""
    fig.add_trace(go.Scatter(x=[x0[0], x1[0]], y=[x0[1], x1[1]], mode="lines+markers", name=name,
                             line=dict(color=color, width=3, dash=dash),
                             marker=dict(symbol=["circle", "arrow"], angleref="previous", size=[4, 16], color=color)))


def _contour(obj, bounds, n=80) -> go.Figure:
    xs, ys, Z = _grid_values(obj, bounds, n=n)
    zmin = float(np.nanmin(Z))
    return go.Figure(go.Contour(x=xs, y=ys, z=np.log10(Z - zmin + 1e-3), colorscale="Greys", showscale=False,
                                opacity=0.35, hoverinfo="skip", contours=dict(coloring="heatmap")))


def view_bounds(points, bounds, pad: float = 0.6):
    """A square window around ``points`` (at least ``pad`` wide), clipped to nothing: zoomed to the step."""
    pts = np.asarray(points, dtype=float)
    lo, hi = pts.min(0), pts.max(0)
    c = (lo + hi) / 2
    half = max(float((hi - lo).max()) * 0.75, pad / 2)
    return ((c[0] - half, c[0] + half), (c[1] - half, c[1] + half))


def anatomy_figure(obj, a: dict, label: str) -> go.Figure:
    """The step p (magenta arrow x_k → x_{k+1}) and B_{k+1} q drawn from x_k (the solver's colour): when the
    secant condition holds, that arrow ends exactly at x_{k+1}. Ellipses at x_{k+1}: Newton's H⁻¹ (black),
    the solver's B_{k+1} (solid) and B_k (dotted), one shared scale."""
    col = color_for(label)
    newton = color_for("newton") if color_for("newton") != col else "#6b6ecf"
    x0, x1 = a["x"], a["x_next"]
    pts = [x0, x1] + ([x0 + a["Bq_next"]] if a["Bq_next"] is not None else [])
    bounds = view_bounds(pts, obj.bounds)
    fig = _contour(obj, bounds)
    span = bounds[0][1] - bounds[0][0]
    # The solver's ellipses wide, Newton's thin on top: where B has converged to H⁻¹ both stay visible
    mats = [(a["B"], f"Bₖ ({label}): before the update", col, "dot"),
            (a["B_next"], f"Bₖ₊₁ ({label}): after the update", col, "solid"),
            (a["H_inv"], "Newton's H⁻¹(xₖ₊₁): the true inverse curvature", newton, "top")]
    mats = [m for m in mats if m[0] is not None and np.isfinite(m[0]).all()]
    biggest = max((float(np.abs(np.linalg.eigvalsh(0.5 * (m + m.T))).max()) for m, *_ in mats), default=1.0)
    scale = 0.25 * span / max(biggest, 1e-12)
    for M, name, c, dash in mats:
        e, w, _ = _ellipse(M, x1, scale)
        top = dash == "top"
        fig.add_trace(go.Scatter(x=e[0], y=e[1], mode="lines", name=name,
                                 line=dict(color=c, width=2 if top else 5, dash="solid" if top else dash)))
    _arrow(fig, x0, x1, STEP_COLOR, "p = xₖ₊₁ − xₖ (the step)")
    if a["Bq_next"] is not None:
        _arrow(fig, x0, x0 + a["Bq_next"], col, "Bₖ₊₁q drawn from xₖ: ends on xₖ₊₁ when the secant "
               "condition holds", dash="dash")
    fig.add_trace(go.Scatter(x=[x0[0], x1[0]], y=[x0[1], x1[1]], mode="markers+text", text=["xₖ", "xₖ₊₁"],
                             textposition="top left", showlegend=False,
                             marker=dict(color=POINT_COLOR, size=9, line=dict(color="black", width=1))))
    fig.update_layout(xaxis=dict(range=list(bounds[0]), constrain="domain"),
                      yaxis=dict(range=list(bounds[1]), scaleanchor="x", constrain="domain"),
                      height=520, margin=dict(l=40, r=10, t=30, b=40),
                      legend=dict(orientation="h", y=-0.12, yanchor="top"))
    fig.add_annotation(text=f"ellipses drawn ×{scale:.2g}", xref="paper", yref="paper", x=1, y=1, xanchor="right",
                       showarrow=False, font=dict(size=11, color="gray"))
    return fig


def psd_comparison(function: str = "himmelblau", start=None, checkpoint: str | None = None,
                   step_scale: float = 1.0, steps: int = 15) -> dict | None:
    """Classical SR1 (fixed step, no line search) from ``start``: its first step whose matrix is indefinite and
    whose direction goes uphill; then, from that same point, one L-SR1 step with the model ``checkpoint``
    (B̃ ⪰ 0, so gᵀB̃g ≥ 0: never uphill to first order). None if SR1 never goes uphill there."""
    obj = teaching_function(function)
    start = tuple(obj.default_start if start is None else start)
    with single_thread():
        tr = run(make_solver("sr1", memory=8), obj, torch.tensor([start], dtype=torch.float64), steps)
        hit = None
        for k in range(tr.steps):
            M = operator_matrix(tr, k)
            if M is None:
                continue
            ev = np.linalg.eigvalsh(0.5 * (M + M.T))
            g, d = tr.g[k, 0].numpy(), tr.d[k, 0].numpy()
            if ev[0] < 0 and float(g @ d) < 0:
                hit = k
                break
        if hit is None:
            return None
        x = tr.x[hit, 0].numpy()
        out = {"function": function, "step": hit + 1, "x": x, "g": tr.g[hit, 0].numpy(), "B": M, "eig": ev,
               "sr1_d": tr.d[hit, 0].numpy(), "lsr1_d": None,
               "sr1_next": tr.x[hit + 1, 0].numpy(), "f": float(tr.f[hit, 0]), "sr1_f": float(tr.f[hit + 1, 0]),
               "lsr1_next": None, "lsr1_f": None, "lsr1_error": None}
        if checkpoint is not None:
            try:
                s = LSR1Solver(checkpoint=checkpoint, step_scale=step_scale)
                s.net.double()
                lt = run(s, obj, torch.from_numpy(np.array([x], dtype=np.float64)), 1)
                out.update(lsr1_next=lt.x[1, 0].numpy(), lsr1_f=float(lt.f[1, 0]), lsr1_d=lt.d[0, 0].numpy())
            except (LSR1Error, RuntimeError) as e:
                out["lsr1_error"] = str(e)
    return out


def psd_figure(obj, ex: dict, lsr1_label: str = "L-SR1") -> go.Figure:
    """The point x, its uphill half-plane (gᵀ(y − x) > 0, shaded), SR1's step (red arrow) and L-SR1's step
    (blue arrow) from x, on the contour."""
    x, g = ex["x"], ex["g"]
    pts = [x, ex["sr1_next"]] + ([ex["lsr1_next"]] if ex["lsr1_next"] is not None else [])
    bounds = view_bounds(pts, obj.bounds, pad=1.0)
    (o0, o1), (p0, p1) = obj.bounds  # never wider than the function's own range (a long step is clipped)
    if bounds[0][1] - bounds[0][0] > max(o1 - o0, p1 - p0):
        bounds = obj.bounds
    fig = _contour(obj, bounds)
    (a0, a1), (b0, b1) = bounds
    # the uphill half-plane, clipped to the window: a large polygon on the +g side of the line through x
    gn = g / max(np.linalg.norm(g), 1e-300)
    t = np.array([-gn[1], gn[0]])
    L = 4 * max(a1 - a0, b1 - b0)
    poly = np.array([x + L * t, x + L * t + L * gn, x - L * t + L * gn, x - L * t, x + L * t])
    fig.add_trace(go.Scatter(x=poly[:, 0], y=poly[:, 1], fill="toself", mode="lines", line=dict(width=0),
                             fillcolor="rgba(214,39,40,0.10)", name="uphill side (gᵀ(y − x) > 0)",
                             hoverinfo="skip"))
    sr1, lsr1 = color_for("sr1"), color_for(lsr1_label)
    _arrow(fig, x, ex["sr1_next"], sr1, f"classical SR1 (B indefinite): f {ex['f']:.4g} → {ex['sr1_f']:.4g}")
    if ex["lsr1_next"] is not None:
        _arrow(fig, x, ex["lsr1_next"], lsr1, f"{lsr1_label} (B̃ ⪰ 0): f {ex['f']:.4g} → {ex['lsr1_f']:.4g}")
    fig.add_trace(go.Scatter(x=[x[0]], y=[x[1]], mode="markers", name="x (SR1's iterate where B turned indefinite)",
                             marker=dict(color=POINT_COLOR, size=10, line=dict(color="black", width=1))))
    fig.update_layout(xaxis=dict(range=[a0, a1], constrain="domain"),
                      yaxis=dict(range=[b0, b1], scaleanchor="x", constrain="domain"), height=480,
                      margin=dict(l=40, r=10, t=30, b=40), legend=dict(orientation="h", y=-0.12, yanchor="top"))
    return fig
