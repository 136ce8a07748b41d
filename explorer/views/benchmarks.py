"""Benchmarks: performance profiles and quadratic convergence curves, precomputed; a comparison bench that runs
chosen solvers and checkpoints live (with the reason for every failure) and overlays training runs' curves."""
from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from explorer.state import sidebar
from lsr1_core.errors import LSR1Error
from lsr1_core.analysis.profile_solvers import NAMES
from lsr1_core.objectives import PROFILE_DIMS, PROFILE_FAMILIES
from lsr1_core.runs import read_metrics
from lsr1_core.runs.root import runs_root
from lsr1_core.viz.bench import BenchEntry, classical_entries, failure_rows, live_profiles, measure_rows
from lsr1_core.viz.plots import convergence_figure, profile_figure
from lsr1_core.viz.training import SERIES_LABELS, overlay_curves

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def _load(name):
    path = RESULTS / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def precomputed_profiles():
    res = _load("profiles.json")
    if res is None:
        st.info("No precomputed profiles found; run `python -m experiments.profiles` or use the bench.")
        return
    st.caption(f"{len(res['table'])} problems, {res['steps']} iterations each, the paper's measure "
               "m = ‖x̂ − x*‖/‖x_w − x*‖. Produced by `python -m experiments.profiles`.")
    st.plotly_chart(profile_figure(res["taus"], res["profile"], res["auc"], NAMES), key="bm_prof")


def precomputed_quadratics():
    res = _load("quadratics.json")
    if res is None:
        st.info("No precomputed quadratic results; run `python -m experiments.quadratics`.")
        return
    fig3 = res["fig3"]
    buffers = [int(b) for b in fig3["buffers"]]
    L = st.select_slider("buffer size L", buffers, value=buffers[-1], key="bm_L")
    st.caption(f"32 test quadratics at N = {fig3['n']}, L-SR1 trained at N = 2 "
               "(`python -m experiments.quadratics`).")
    st.plotly_chart(convergence_figure(fig3, L), key="bm_quad")


def bench(ctx):
    """Live runs of chosen classical solvers and L-SR1 checkpoints; the sidebar's models are the default."""
    st.caption("Runs here, in this page (a few problems take seconds, the whole suite minutes). Learning rates of "
               "GD, Adam, AdaHessian and LODO are tuned per family on its smallest problem; a failure's reason "
               "is listed below the profile.")
    models = ctx["models"]
    c1, c2 = st.columns(2)
    classical = {e.label: e for e in classical_entries()}
    chosen_cl = c1.multiselect("classical solvers", list(classical), default=["Adam", "L-BFGS"], key="bm_solvers")
    sidebar_models = [m for m in st.session_state.get("lsr1_models", []) if m in models]
    if st.session_state.get("bm_models_seen") != sidebar_models:  # follow the sidebar whenever it changes
        st.session_state["bm_models_seen"] = sidebar_models
        st.session_state["bm_models"] = sidebar_models
    chosen_m = c2.multiselect("L-SR1 checkpoints (shipped and runs/)", list(models), key="bm_models",
                              help="follows the sidebar's L-SR1 models; add or remove checkpoints here")
    c3, c4, c5 = st.columns(3)
    fams = c3.multiselect("families", list(PROFILE_FAMILIES), default=["quad_cond100", "rosenbrock"], key="bm_fams")
    dims = c4.multiselect("dimensions N", list(PROFILE_DIMS), default=[50], key="bm_dims")
    steps = int(c5.slider("iterations", 10, 300, 50, key="bm_steps"))
    scale = ctx.get("scale", 1.0)
    entries = [classical[c] for c in chosen_cl] + [
        BenchEntry("L-SR1 " + m.split(": ", 1)[-1], "lsr1", str(models[m]), scale) for m in chosen_m]
    if st.button("Run", key="bm_run", type="primary"):
        st.session_state.pop("bm_live", None)  # a new run replaces the old result, also when it fails
        if not fams or not dims:
            st.error("choose at least one family and one dimension")
        else:
            bar = st.progress(0.0, text="starting…")
            try:
                st.session_state["bm_live"] = live_profiles(
                    entries, steps=steps, families=tuple(fams), dims=tuple(dims),
                    progress=lambda f, m: bar.progress(min(1.0, f), text=m))
                bar.progress(1.0, text="done")
            except LSR1Error as e:
                bar.empty()
                st.error(f"Not run: {e}")
    live = st.session_state.get("bm_live")
    if live:
        st.plotly_chart(profile_figure(live["taus"], live["profile"], live["auc"]), key="bm_live_fig")
        fails = failure_rows(live)
        if fails:
            st.markdown(f"**{len(fails)} failed runs** (measure ∞ in the profile) and why:")
            st.dataframe(fails, hide_index=True, key="bm_fail")
        else:
            st.success("every solver finished every problem")
        st.markdown("**Measure per problem** (distance to x* relative to the worst solver; 1 = the worst)")
        st.dataframe(measure_rows(live), hide_index=True, key="bm_table")


def training_overlay():
    """Several training runs' curves on one plot, log scales."""
    root = runs_root()
    runs = sorted((p for p in root.iterdir() if (p / "metrics.jsonl").exists() or (p / "status.json").exists()),
                  key=lambda p: p.name) if root.exists() else []
    if not runs:
        st.info(f"No training runs in {root} yet: launch some on the Meta-training page.")
        return
    names = [p.name for p in runs]
    chosen = st.multiselect("runs", names, default=names[-3:], key="bm_runs")
    c1, c2 = st.columns(2)
    labels = dict(SERIES_LABELS)
    key = c1.selectbox("curve", list(labels), format_func=labels.get, key="bm_curve")
    logx = c2.toggle("log meta-iteration axis", key="bm_logx")
    data = {n: read_metrics(root / n) for n in chosen}
    st.plotly_chart(overlay_curves(data, key, log_x=logx), key="bm_overlay")
    st.caption("Training curves are running medians (single meta-iterations spike); validation curves are raw.")


def render():
    ctx = sidebar()
    st.title("Benchmarks")
    # Lazy tabs: only the open one reads its files and draws
    tabs = st.tabs(["Performance profiles (Fig. 3c)", "Quadratics (Fig. 3a)", "Comparison bench",
                    "Training runs overlaid"], key="bm_tab", on_change="rerun")
    for tab, body in zip(tabs, (precomputed_profiles, precomputed_quadratics, lambda: bench(ctx),
                                training_overlay)):
        if tab.open:
            with tab:
                body()

if __name__ == "__main__":
    render()
