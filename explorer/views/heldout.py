"""The Meta-training page's "did learning pay?" panel (issue 22, part 6).

For any qn checkpoint — a shipped card or a run's best checkpoint — a held-out comparison on problems of its family
that no training run used: the model against its own untrained start and L-BFGS, at equal evaluations (function +
gradient, counted per problem). A plot of the mean normalised log10 gap over the evaluation budget (95 % intervals)
and the table of paired differences. Computed on demand (it runs the three methods on 16–64 problems: seconds for
the analytic families, a minute or more for digits and mesh recovery) and cached per checkpoint file.
"""
from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from lsr1_core.errors import LSR1Error
from lsr1_core.meta.families import FAMILIES

COLORS = {"trained": "#d62728", "untrained": "#7f7f7f", "lbfgs": "#1f77b4"}
DEFAULT_CHOICE = "shipped: qn_logistic"
LABELS = {"trained": "this checkpoint", "untrained": "its untrained start", "lbfgs": "L-BFGS (strong Wolfe)"}


@st.cache_data(show_spinner=False, max_entries=32)
def _compare(path: str, mtime: float, family: str | None, seeds: int) -> dict:
    from lsr1_core.meta.heldout import compare_card

    return compare_card(Path(path), family=family, n_seeds=seeds)


def comparison_figure(h: dict) -> go.Figure:
    """Mean normalised log10 gap against the evaluation budget for the model, its untrained start and L-BFGS."""
    fig = go.Figure()
    budgets = h["budgets"]
    for key in ("trained", "untrained", "lbfgs"):
        m = [r[key]["mean"] for r in h["rows"]]
        lo = [r[key]["lo"] for r in h["rows"]]
        hi = [r[key]["hi"] for r in h["rows"]]
        fig.add_trace(go.Scatter(x=budgets + budgets[::-1], y=hi + lo[::-1], fill="toself", line=dict(width=0),
                                 fillcolor=COLORS[key], opacity=0.15, hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=budgets, y=m, mode="lines+markers", name=LABELS[key],
                                 line=dict(color=COLORS[key], width=3 if key == "trained" else 2)))
    fig.update_layout(title=f"Held-out {h['family']} ({h['problems']} problems): did learning pay?",
                      xaxis_title="evaluations (function + gradient) per problem",
                      yaxis_title="best log10 (f − f*)/(f₀ − f*) within the budget", height=380,
                      margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(type="log", tickvals=budgets, ticktext=[str(b) for b in budgets])
    return fig


def table_rows(h: dict) -> list[dict]:
    def ci(c):
        return f"{c['mean']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}]"

    rows = []
    for r in h["rows"] + [dict(h["mean_over_budgets"], budget="mean")]:
        rows.append({"evaluations": str(r["budget"]), "checkpoint": ci(r["trained"]),
                     "untrained start": ci(r["untrained"]), "L-BFGS": ci(r["lbfgs"]),
                     "checkpoint − untrained": ci(r["trained_vs_untrained"]),
                     "checkpoint − L-BFGS": ci(r["trained_vs_lbfgs"])})
    return rows


def verdict(h: dict) -> str:
    d = h["mean_over_budgets"]["trained_vs_untrained"]
    lb = h["mean_over_budgets"]["trained_vs_lbfgs"]
    if d["hi"] < 0:
        head = f"Learning paid: {d['mean']:+.2f} in log10 gap against the untrained start (mean over budgets"
    elif d["lo"] > 0:
        head = f"Learning made it worse: {d['mean']:+.2f} against the untrained start (mean over budgets"
    else:
        head = f"No measurable gain: {d['mean']:+.2f} against the untrained start (mean over budgets"
    return (head + f", 95 % interval [{d['lo']:+.2f}, {d['hi']:+.2f}]); against L-BFGS {lb['mean']:+.2f} "
            f"[{lb['lo']:+.2f}, {lb['hi']:+.2f}]. Lower is better.")


def heldout_panel(candidates: dict[str, Path], key: str = "heldout") -> None:
    """The panel: ``candidates`` maps a label to a checkpoint stem (``…/best`` of a run or ``pretrained/NAME``)."""
    st.subheader("Did learning pay? Held-out comparison at equal evaluations")
    if not candidates:
        st.info("No qn checkpoint to compare yet: ship one with `python -m lsr1_core.pretrained train-scalars` or "
                "finish a qn run.")
        return
    labels = list(candidates)
    c1, c2, c3 = st.columns([3, 2, 1])
    with c1:
        # the quickest clear example first (mesh recovery's comparison refits references for a minute)
        first = labels.index(DEFAULT_CHOICE) if DEFAULT_CHOICE in labels else 0
        label = st.selectbox("Checkpoint", labels, index=first, key=f"{key}_ckpt")
    fam_options = ["its own family"] + list(FAMILIES)
    with c2:
        fam = st.selectbox("Problems", fam_options, key=f"{key}_family",
                           help="Held-out draws of a family (seeds no training run used). Another family than the "
                                "checkpoint's own is a transfer test, and the result says so.")
    with c3:
        seeds = st.number_input("Seeds", min_value=1, max_value=8, value=2, key=f"{key}_seeds",
                                help="Held-out seeds; each draws 4–16 problems.")
    if not st.button("Compare", key=f"{key}_go"):
        return
    stem = candidates[label]
    card = stem.with_suffix(".json")
    try:
        mtime = card.stat().st_mtime
        with st.spinner("running the checkpoint, its untrained start and L-BFGS on held-out problems…"):
            h = _compare(str(stem), mtime, None if fam == fam_options[0] else fam, int(seeds))
    except (LSR1Error, OSError) as e:
        st.error(f"Cannot compare {label}: {e}")
        return
    if h.get("note"):
        st.warning(h["note"])
    st.markdown(f"**What is learned:** {h.get('learned_status')}")
    st.markdown(verdict(h))
    st.plotly_chart(comparison_figure(h), width="stretch", key=f"{key}_fig")
    st.dataframe(table_rows(h), hide_index=True, width="stretch")
    st.caption("Each cell: mean best log10 (f − f*)/(f₀ − f*) within the budget over the held-out problems (95 % "
               "t-interval); differences are paired per problem. Every evaluation of f and ∇f is counted per problem, "
               "the qn form's curvature probe and line-search trials included. Command line: "
               "`python -m lsr1_core.pretrained compare NAME`.")


MAX_CARD_BYTES = 4 << 20


def _is_qn_card(path: Path) -> bool:
    """A regular JSON card of at most 4 MiB whose config is of the qn form (anything else is skipped)."""
    import json

    from lsr1_core.checkpoints import read_regular_file

    try:
        d = json.loads(read_regular_file(path, MAX_CARD_BYTES))
    except (OSError, ValueError, LSR1Error, RecursionError):
        return False
    return isinstance(d, dict) and isinstance(d.get("config"), dict) and d["config"].get("form") == "qn"


def qn_candidates(runs, pretrained_dir: Path) -> dict[str, Path]:
    """Shipped qn cards and finished runs' best checkpoints of the qn form, label → stem."""
    out: dict[str, Path] = {}
    for card in sorted(Path(pretrained_dir).glob("*.json")):
        if _is_qn_card(card):
            out[f"shipped: {card.stem}"] = card.with_suffix("")
    for r in runs or []:
        best = Path(r.path) / "best.json"
        if getattr(r, "kind", "lsr1") == "lsr1" and _is_qn_card(best):
            out[f"run: {r.run_id}"] = best.with_suffix("")
    return out
