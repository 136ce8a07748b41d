"""Meta-training page: launch, watch, cancel and resume background runs.

Runs are separate OS processes managed by lsr1_core.runs, so they survive the browser tab; this page only
reads their directories. Live panels refresh with a fragment (run_every)."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from lsr1_core.checkpoints import read_checkpoint_bytes
from lsr1_core.errors import LSR1Error
from lsr1_core.hmr.presets import HMR_PRESETS, hmr_preset
from lsr1_core.meta.presets import PRESETS, preset
from lsr1_core.meta.scalar_problem import SCALAR_PRESETS, scalar_preset
from lsr1_core.meta.scalars import SCALARS
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.runs.root import runs_root
from lsr1_core.viz.training import training_curves

KIND_NAMES = {"lsr1": "L-SR1", "hmr": "HMR", "scalars": "qn scalars (ES)"}
MAX_CONCURRENT = int(os.environ.get("LSR1_MAX_CONCURRENT", "1"))
REFRESH_S = float(os.environ.get("LSR1_REFRESH_S", "2"))


def _fmt_s(s):
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def runs_root_dir() -> Path:
    """The one runs root (``lsr1_core.runs.root.runs_root``, ``$LSR1_RUNS_ROOT``), shared with the sidebar."""
    return runs_root()


def _manager(backend: str | None = None) -> RunManager:
    return RunManager(runs_root_dir(), max_concurrent=MAX_CONCURRENT, backend=backend)


# form field: key, label, type, lower bound, upper bound, lower bound allowed. The widgets have no bounds of their
# own (a bounded number input turns red on a bad value and silently keeps the last good one, which Launch would
# then use); every field is checked here and Launch starts exactly the values shown.
FIELDS = (("train_n", "N (dimension)", int, 1, 10_000, True), ("train_L", "L (buffer)", int, 1, 256, True),
          ("train_K", "K (unrolled steps)", int, 1, 512, True), ("train_lsec", "λ_sec", float, 0.0, 1e6, True),
          ("train_g1", "γ1", float, 0.0, 10.0, False), ("train_g2", "γ2", float, -10.0, 10.0, True),
          ("train_batch", "batch", int, 1, 4096, True), ("train_iters", "iterations", int, 1, 1_000_000, True),
          ("train_lr", "meta learning rate", float, 0.0, 1.0, False), ("train_seed", "seed", int, 0, 2**31 - 1, True))
# an HMR preset (update stage on the shipped initializer) has no N, L, γ or hidden width to set; it has a
# validation set (PA-MPJPE after K steps chooses the best checkpoint)
HMR_FIELDS = tuple(f for f in FIELDS if f[0] in ("train_K", "train_lsec", "train_batch", "train_iters", "train_lr",
                                                  "train_seed")) + (("train_val", "validation samples", int, 1, 1024,
                                                                     True),)


def is_hmr(name: str) -> bool:
    return name in HMR_PRESETS


def is_scalars(name: str) -> bool:
    return name in SCALAR_PRESETS


# a scalar preset (ES on the qn form's family-level scalars, lsr1_core.meta.scalar_problem)
SCALAR_FIELDS = (("train_batch", "ES pairs per iteration", int, 1, 64, True),
                 ("train_iters", "iterations", int, 1, 100_000, True),
                 ("train_lr", "meta learning rate", float, 0.0, 1.0, False),
                 ("train_sigma", "ES σ", float, 0.0, 2.0, False),
                 ("train_seed", "seed", int, 0, 2**31 - 1, True))


def preset_values(name: str) -> dict:
    """The form's values for preset ``name`` (session_state keys → values)."""
    if is_scalars(name):
        c = scalar_preset(name)
        return {"train_batch": c.batch, "train_iters": c.iterations, "train_lr": float(c.lr),
                "train_sigma": float(c.sigma), "train_params": list(c.params)}
    if is_hmr(name):
        c = hmr_preset(name)
        return {"train_K": c.unroll, "train_lsec": float(c.secant_weight), "train_batch": c.batch,
                "train_iters": c.iterations, "train_lr": float(c.lr), "train_val": c.val_size}
    c = preset(name)
    return {"train_n": c.n, "train_L": c.model.memory, "train_K": c.unroll, "train_lsec": float(c.secant_weight),
            "train_form": c.secant_form, "train_g1": float(c.model.gamma1), "train_g2": float(c.model.gamma2),
            "train_batch": c.batch, "train_iters": c.iterations, "train_lr": float(c.lr),
            "train_hidden": c.model.hidden}


def _load_preset():
    st.session_state.update(preset_values(st.session_state["train_preset"]))


def field_errors(values: dict, fields=FIELDS) -> list[str]:
    """One message per field outside its range (empty when every field is valid)."""
    out = []
    for key, label, typ, lo, hi, lo_ok in fields:
        v = values.get(key)
        if v is None:
            out.append(f"{label} is empty")
            continue
        if typ is int and float(v) != int(v):
            out.append(f"{label} must be a whole number, got {v}")
        elif v < lo or (v == lo and not lo_ok) or v > hi:
            out.append(f"{label} must be {'≥' if lo_ok else '>'} {lo:g} and ≤ {hi:g}, got {v:g}")
    return out


def launch_form():
    st.subheader("Launch a run")
    names = sorted(PRESETS) + sorted(HMR_PRESETS) + sorted(SCALAR_PRESETS)
    if "train_loaded" not in st.session_state:  # not a widget key: the HMR form has no N field to test for
        st.session_state.setdefault("train_preset", "quadratic")
        _load_preset()
        st.session_state["train_loaded"] = True
    name = st.selectbox("Preset", names, key="train_preset", on_change=_load_preset,
                        help="quadratic: appendix C.2.1; profile_*: Table 7; qn_*: the scale-free form; hmr_*: human "
                             "mesh recovery's update stage (LGD or L-SR1) on the shipped initializer; qn_scalars_*: "
                             "the qn form's family-level scalars (diagonal metric, H₀ scale) learned by ES on a family's "
                             "meta-loss in evaluations. Choosing one loads its values below.")
    st.selectbox("Run on", ["local", "slurm"], key="train_backend",
                 help="local: a background process on this machine. slurm: a SLURM job submitted through submitit "
                      "(needs the submitit package and the SLURM commands here; the runs root must be on a file "
                      "system the compute nodes share). Cancel and resume work on both.")
    if is_hmr(name):
        hmr_form(name)
        return
    if is_scalars(name):
        scalars_form(name)
        return
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        st.number_input("N (dimension)", step=1, key="train_n")
        st.number_input("L (buffer)", step=1, key="train_L")
        st.number_input("K (unrolled steps)", step=1, key="train_K")
    with c2:
        st.number_input("λ_sec", key="train_lsec")
        st.selectbox("secant penalty", ["relative", "absolute"], key="train_form")
        st.number_input("γ1", format="%.4f", key="train_g1")
    with c3:
        st.number_input("γ2", format="%.4f", key="train_g2")
        st.number_input("batch", step=1, key="train_batch")
        st.number_input("iterations", step=1, key="train_iters")
    with c4:
        st.number_input("meta learning rate", format="%.1e", key="train_lr")
        st.number_input("seed", value=0, step=1, key="train_seed")
        device = st.selectbox("device", ["auto", "cpu", "cuda"], key="train_device")
    hidden = st.select_slider("hidden width", options=[16, 32, 64, 128, 256], key="train_hidden")
    run_name = st.text_input("run name (optional)", key="train_name")
    v = {key: st.session_state.get(key) for key, *_ in FIELDS}
    if _launch_button(field_errors(v)):
        iterations = int(v["train_iters"])
        _launch(name, run_name, lambda: preset(
            name, n=int(v["train_n"]), unroll=int(v["train_K"]), secant_weight=float(v["train_lsec"]),
            secant_form=st.session_state["train_form"], batch=int(v["train_batch"]), iterations=iterations,
            lr=float(v["train_lr"]), seed=int(v["train_seed"]), device=device,
            val_every=max(1, min(100, iterations // 10)), ckpt_every=max(1, min(200, iterations // 5)),
            model={"memory": int(v["train_L"]), "gamma1": float(v["train_g1"]), "gamma2": float(v["train_g2"]),
                   "hidden": int(hidden)}))


def hmr_form(name: str):
    """The form of an HMR preset: K, λ_sec (L-SR1), batch, iterations, learning rate, seed, validation size."""
    st.caption("Human mesh recovery, update stage: the frozen initializer of `pretrained/hmr_lsr1` (shared by every "
               "shipped HMR model) and a new update module trained on Eq. 13's meta-loss; the best checkpoint is the "
               "one with the lowest validation PA-MPJPE after K steps, and a finished run appears in the Human mesh "
               "recovery page's checkpoint choice. On the CPU one iteration at batch 128 takes seconds.")
    lsr1 = hmr_preset(name).method == "lsr1"
    c1, c2, c3 = st.columns(3)
    with c1:
        st.number_input("K (unrolled steps)", step=1, key="train_K")
        st.number_input("λ_sec", key="train_lsec", disabled=not lsr1, help="the secant weight (L-SR1 only)")
    with c2:
        st.number_input("batch", step=1, key="train_batch")
        st.number_input("iterations", step=1, key="train_iters")
    with c3:
        st.number_input("meta learning rate", format="%.1e", key="train_lr")
        st.number_input("seed", value=0, step=1, key="train_seed")
    st.number_input("validation samples", step=1, key="train_val")
    run_name = st.text_input("run name (optional)", key="train_name")
    v = {key: st.session_state.get(key) for key, *_ in HMR_FIELDS}
    if _launch_button(field_errors(v, HMR_FIELDS)):
        iterations = int(v["train_iters"])
        every = max(1, min(50, iterations // 10))
        _launch(name, run_name, lambda: hmr_preset(
            name, unroll=int(v["train_K"]), secant_weight=float(v["train_lsec"]), batch=int(v["train_batch"]),
            iterations=iterations, lr=float(v["train_lr"]), seed=int(v["train_seed"]), val_size=int(v["train_val"]),
            val_every=every, ckpt_every=every))


def scalars_form(name: str):
    """The form of a scalar preset: which scalars, ES pairs, iterations, learning rate, σ, seed."""
    c = scalar_preset(name)
    st.caption(f"Learns the qn form's family-level scalars on **{c.family}** by antithetic evolution strategies on "
               "the family's meta-loss in evaluations (the best log10 gap within 16–128 evaluations, every function "
               "and gradient evaluation counted). The networks stay untrained; the best checkpoint is an ordinary qn "
               "card. Use the held-out panel below to see whether it beats its untrained start and L-BFGS.")
    st.multiselect("learned scalars", list(SCALARS), key="train_params",
                   help="; ".join(f"{k}: {v.doc}" for k, v in SCALARS.items()))
    c1, c2, c3 = st.columns(3)
    with c1:
        st.number_input("ES pairs per iteration", step=1, key="train_batch")
        st.number_input("iterations", step=1, key="train_iters")
    with c2:
        st.number_input("meta learning rate", format="%.3f", key="train_lr")
        st.number_input("ES σ", format="%.3f", key="train_sigma")
    with c3:
        st.number_input("seed", value=0, step=1, key="train_seed")
    run_name = st.text_input("run name (optional)", key="train_name")
    v = {key: st.session_state.get(key) for key, *_ in SCALAR_FIELDS}
    errors = field_errors(v, SCALAR_FIELDS)
    if not st.session_state.get("train_params"):
        errors.append("choose at least one scalar to learn")
    if _launch_button(errors):
        iterations = int(v["train_iters"])
        _launch(name, run_name, lambda: scalar_preset(
            name, params=tuple(st.session_state["train_params"]), batch=int(v["train_batch"]), iterations=iterations,
            lr=float(v["train_lr"]), sigma=float(v["train_sigma"]), seed=int(v["train_seed"]),
            val_every=max(1, min(5, iterations // 10)), ckpt_every=max(1, min(10, iterations // 5))))


def _launch_button(errors: list[str]) -> bool:
    if errors:
        st.error("Fix these fields to launch:\n\n" + "\n".join(f"- {e}" for e in errors))
    return st.button("Launch", type="primary", key="train_launch", disabled=bool(errors)) and not errors


def _launch(name: str, run_name: str, make_config) -> None:
    """Start the run ``make_config()`` describes (a config error is shown, nothing starts)."""
    try:
        rid = _manager(st.session_state.get("train_backend")).start(make_config(), preset_name=name,
                                                                    run_id=run_name.strip() or None)
        st.session_state["train_selected"] = rid
        st.session_state["train_watch"] = rid  # the watch panel follows the new run
        st.success(f"Started run {rid}. It runs in the background; you can close this tab.")
    except LSR1Error as e:
        st.error(f"Not launched: {e}")


def newest_first(runs):
    """Runs by creation time, newest first (the id breaks ties)."""
    return sorted(runs, key=lambda r: (r.created or "", r.run_id), reverse=True)


def runs_table():
    mgr = _manager()
    try:
        mgr.schedule()
        runs = mgr.list()
    except LSR1Error as e:
        st.error(str(e))
        return []
    if not runs:
        st.info(f"No runs yet in {runs_root_dir()}. Launch one above or with `python -m lsr1_core.runs start`.")
        return []
    rows = [{"run": r.run_id, "preset": r.preset, "task": KIND_NAMES.get(r.kind, r.kind), "backend": r.backend,
             "status": r.state, "progress": r.progress,
             "iteration": f"{r.iteration}/{r.total}", "elapsed": _fmt_s(r.elapsed_s),
             "remaining": _fmt_s(r.remaining_s), "best val": r.best_val,
             "error": r.error or ""} for r in newest_first(runs)]
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)})
    finished_hmr = [r for r in newest_first(runs) if r.kind == "hmr" and r.state == "finished"]
    if finished_hmr:
        st.markdown("**Finished HMR runs** (their best checkpoints are offered on the Human mesh recovery page)")
        st.dataframe([{"run": r.run_id, "preset": r.preset, "iterations": r.iteration,
                       "best validation PA-MPJPE (mm)": r.best_val} for r in finished_hmr],
                     hide_index=True, width="stretch", key="train_hmr_runs")
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
    st.plotly_chart(training_curves(metrics, title=run_id, kind=info.kind), width="stretch", key=f"curves_{run_id}")
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
            # only the weights file the card names, in the run directory, matching its SHA-256 (issue 14)
            weights, card_bytes = read_checkpoint_bytes(info.path / "best", kind=info.kind)
            with c3:
                st.download_button("Best checkpoint (.safetensors)", data=weights,
                                   file_name=f"{run_id}.safetensors", key=f"dl_w_{run_id}")
            with c4:
                st.download_button("Model card (.json)", data=card_bytes, file_name=f"{run_id}.json",
                                   key=f"dl_c_{run_id}")
        except (OSError, KeyError, ValueError, MemoryError) as e:  # CheckpointError is a ValueError
            st.warning(f"best checkpoint unreadable right now ({e}); it is being rewritten, was removed or is "
                       "not this run's checkpoint")


def render():
    st.title("Meta-training")
    st.caption("Runs are background processes with their own directories under "
               f"`{runs_root_dir()}`; closing the tab does not stop them. A finished run's best checkpoint appears in "
               "the model choice of the other pages.")
    launch_form()
    st.divider()

    @st.fragment(run_every=REFRESH_S)
    def live():
        runs = runs_table()
        if runs:
            ids = [r.run_id for r in newest_first(runs)]
            if st.session_state.get("train_watch") not in ids:
                sel = st.session_state.get("train_selected")
                st.session_state["train_watch"] = sel if sel in ids else ids[0]
            chosen = st.selectbox("Watch run", ids, key="train_watch")
            st.session_state["train_selected"] = chosen
            run_panel(chosen)

    live()
    st.divider()
    heldout_section()


def heldout_section():
    """Did learning pay? (issue 22): any shipped qn card or finished qn run against its untrained start and L-BFGS."""
    from lsr1_core.checkpoints import PRETRAINED_DIR

    from explorer.views.heldout import heldout_panel, qn_candidates

    try:
        runs = _manager().list()
    except LSR1Error:
        runs = []
    heldout_panel(qn_candidates(runs, PRETRAINED_DIR))


if __name__ == "__main__" or os.environ.get("LSR1_PAGE_DIRECT"):
    render()
