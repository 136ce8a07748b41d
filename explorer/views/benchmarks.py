"""Benchmarks: performance profiles and quadratic convergence curves, precomputed or re-run live."""
from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from explorer.state import sidebar
from lsr1_core.experiments.profiles import NAMES, compute
from lsr1_core.objectives import PROFILE_DIMS, PROFILE_FAMILIES
from lsr1_core.viz.plots import convergence_figure, profile_figure

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def _load(name):
    path = RESULTS / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def render():
    sidebar()
    st.title("Benchmarks")
    tab_prof, tab_quad, tab_live = st.tabs(["Performance profiles (Fig. 3c)", "Quadratics (Fig. 3a)", "Re-run live"])
    with tab_prof:
        res = _load("profiles.json")
        if res is None:
            st.info("No precomputed profiles found; run `python -m lsr1_core.experiments.profiles` or use "
                    "the live tab.")
        else:
            st.caption(f"{len(res['table'])} problems, {res['steps']} iterations each, the paper's measure "
                       "m = ‖x̂ − x*‖/‖x_w − x*‖. Produced by `python -m lsr1_core.experiments.profiles`.")
            st.plotly_chart(profile_figure(res["taus"], res["profile"], res["auc"], NAMES), key="bm_prof")
    with tab_quad:
        res = _load("quadratics.json")
        if res is None:
            st.info("No precomputed quadratic results; run `python -m lsr1_core.experiments.quadratics`.")
        else:
            fig3 = res["fig3"]
            buffers = [int(b) for b in fig3["buffers"]]
            L = st.select_slider("buffer size L", buffers, value=buffers[-1], key="bm_L")
            st.caption(f"32 test quadratics at N = {fig3['n']}, L-SR1 trained at N = 2 "
                       "(`python -m lsr1_core.experiments.quadratics`).")
            st.plotly_chart(convergence_figure(fig3, L), key="bm_quad")
    with tab_live:
        st.caption("Re-run a subset of the suite here (runs in this page; larger subsets take minutes).")
        fams = st.multiselect("families", list(PROFILE_FAMILIES), default=["quad_cond100", "rosenbrock"],
                              key="bm_fams")
        dims = st.multiselect("dimensions N", list(PROFILE_DIMS), default=[50], key="bm_dims")
        solvers = st.multiselect("solvers", list(NAMES), default=["gd", "adam", "lbfgs", "lsr1"], key="bm_solvers")
        steps = int(st.slider("iterations", 10, 300, 50, key="bm_steps"))
        if st.button("Run", key="bm_run", type="primary"):
            if not fams or not dims or len(solvers) < 2:
                st.error("choose at least one family, one dimension and two solvers")
            else:
                bar = st.progress(0.0, text="starting…")
                out = compute(steps=steps, families=tuple(fams), dims=tuple(dims), solvers=solvers,
                              progress=lambda f, m: bar.progress(min(1.0, f), text=m))
                bar.progress(1.0, text="done")
                st.session_state["bm_live"] = out
        live = st.session_state.get("bm_live")
        if live:
            st.plotly_chart(profile_figure(live["taus"], live["profile"], live["auc"], NAMES), key="bm_live_fig")
            st.dataframe([{"problem": p, **{NAMES.get(s, s): v for s, v in row.items()}}
                          for p, row in live["table"].items()], hide_index=True)


if __name__ == "__main__":
    render()
