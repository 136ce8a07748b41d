"""Meta-training page: launch, watch, cancel and resume background runs.

Runs are separate OS processes managed by lsr1_core.runs, so they survive the browser tab; this page only
reads their directories. Live panels refresh with a fragment (run_every)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from lsr1_core.errors import LSR1Error
from lsr1_core.meta.presets import PRESETS, preset
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.viz.training import training_curves

RUNS_ROOT = Path(os.environ.get("LSR1_RUNS_ROOT", "runs/jobs"))
MAX_CONCURRENT = int(os.environ.get("LSR1_MAX_CONCURRENT", "1"))
REFRESH_S = float(os.environ.get("LSR1_REFRESH_S", "2"))


def _fmt_s(s):
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _manager() -> RunManager:
    return RunManager(RUNS_ROOT, max_concurrent=MAX_CONCURRENT)


def launch_form():
    st.subheader("Launch a run")
    names = sorted(PRESETS)
    name = st.selectbox("Preset", names, index=names.index("quadratic"), key="train_preset",
                        help="quadratic: appendix C.2.1; profile_*: Table 7")
    base = preset(name)
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        n = st.number_input("N (dimension)", min_value=1, max_value=10_000, value=base.n, key="train_n")
        memory = st.number_input("L (buffer)", min_value=1, max_value=256, value=base.model.memory, key="train_L")
        unroll = st.number_input("K (unrolled steps)", min_value=1, max_value=512, value=base.unroll, key="train_K")
    with c2:
        secant = st.number_input("λ_sec", min_value=0.0, value=float(base.secant_weight), key="train_lsec")
        form = st.selectbox("secant penalty", ["relative", "absolute"],
                            index=["relative", "absolute"].index(base.secant_form), key="train_form")
        gamma1 = st.number_input("γ1", min_value=1e-6, value=float(base.model.gamma1), format="%.4f", key="train_g1")
    with c3:
        gamma2 = st.number_input("γ2", value=float(base.model.gamma2), format="%.4f", key="train_g2")
        batch = st.number_input("batch", min_value=1, max_value=4096, value=base.batch, key="train_batch")
        iterations = st.number_input("iterations", min_value=1, max_value=1_000_000, value=500, key="train_iters")
    with c4:
        lr = st.number_input("meta learning rate", min_value=1e-8, value=float(base.lr), format="%.1e", key="train_lr")
        seed = st.number_input("seed", min_value=0, value=0, key="train_seed")
        device = st.selectbox("device", ["auto", "cpu", "cuda"], key="train_device")
    hidden = st.select_slider("hidden width", options=[16, 32, 64, 128, 256], value=base.model.hidden, key="train_hidden")
    run_name = st.text_input("run name (optional)", key="train_name")
    if st.button("Launch", type="primary", key="train_launch"):
        try:
            cfg = preset(name, n=int(n), unroll=int(unroll), secant_weight=float(secant), secant_form=form,
                         batch=int(batch), iterations=int(iterations), lr=float(lr), seed=int(seed), device=device,
                         val_every=max(1, min(100, int(iterations) // 10)),
                         ckpt_every=max(1, min(200, int(iterations) // 5)),
                         model={"memory": int(memory), "gamma1": float(gamma1), "gamma2": float(gamma2),
                                "hidden": int(hidden)})
            rid = _manager().start(cfg, preset_name=name, run_id=run_name.strip() or None)
            st.session_state["train_selected"] = rid
            st.success(f"Started run {rid}. It runs in the background; you can close this tab.")
        except LSR1Error as e:
            st.error(f"Not launched: {e}")


def runs_table():
    mgr = _manager()
    try:
        mgr.schedule()
        runs = mgr.list()
    except LSR1Error as e:
        st.error(str(e))
        return []
    if not runs:
        st.info(f"No runs yet in {RUNS_ROOT}. Launch one above or with `python -m lsr1_core.runs start`.")
        return []
    rows = [{"run": r.run_id, "preset": r.preset, "status": r.state, "progress": r.progress,
             "iteration": f"{r.iteration}/{r.total}", "elapsed": _fmt_s(r.elapsed_s),
             "remaining": _fmt_s(r.remaining_s), "best val": r.best_val,
             "error": r.error or ""} for r in reversed(runs)]
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)})
    return runs


def run_panel(run_id: str):
    mgr = _manager()
    try:
        info = mgr.info(run_id)
    except LSR1Error as e:
        st.warning(f"{e}. It may have been deleted; pick another run.")
        return
    st.markdown(f"**{run_id}** — {info.state}, iteration {info.iteration} of {info.total}"
                + (f" — error: `{info.error}`" if info.error else ""))
    metrics = read_metrics(info.path)
    st.plotly_chart(training_curves(metrics, title=run_id), width="stretch", key=f"curves_{run_id}")
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        if st.button("Cancel", disabled=info.state not in ("running", "queued"), key=f"cancel_{run_id}"):
            try:
                st.toast(f"{run_id}: {mgr.cancel(run_id, wait=5)}")
            except LSR1Error as e:
                st.error(str(e))
    with c2:
        if st.button("Resume", disabled=info.state in ("running", "queued"), key=f"resume_{run_id}"):
            try:
                more = info.total if info.iteration < info.total else info.total + max(100, info.total // 2)
                st.toast(f"{run_id}: {mgr.resume(run_id, iterations=more)}")
            except LSR1Error as e:
                st.error(str(e))
    best_card = info.path / "best.json"
    if best_card.exists():
        try:
            import json
            card = json.loads(best_card.read_text())
            weights = info.path / card["weights_file"]
            with c3:
                st.download_button("Best checkpoint (.safetensors)", data=weights.read_bytes(),
                                   file_name=f"{run_id}.safetensors", key=f"dl_w_{run_id}")
            with c4:
                st.download_button("Model card (.json)", data=best_card.read_bytes(), file_name=f"{run_id}.json",
                                   key=f"dl_c_{run_id}")
        except (OSError, KeyError, ValueError) as e:
            st.warning(f"best checkpoint unreadable right now ({e}); it is being rewritten or was removed")


def render():
    st.title("Meta-training")
    st.caption("Runs are background processes with their own directories under "
               f"`{RUNS_ROOT}`; closing the tab does not stop them. A finished run's best checkpoint appears in "
               "the model choice of the other pages.")
    launch_form()
    st.divider()

    @st.fragment(run_every=REFRESH_S)
    def live():
        runs = runs_table()
        if runs:
            ids = [r.run_id for r in reversed(runs)]
            sel = st.session_state.get("train_selected")
            idx = ids.index(sel) if sel in ids else 0
            chosen = st.selectbox("Watch run", ids, index=idx, key="train_watch")
            st.session_state["train_selected"] = chosen
            run_panel(chosen)

    live()


if __name__ == "__main__" or os.environ.get("LSR1_PAGE_DIRECT"):
    render()
