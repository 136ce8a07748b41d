"""Human mesh recovery: step through mesh refinements and compare L-SR1 with LGD (paper Figures 5 and 9).

A sample (2-D keypoints in a 256 × 256 virtual image) is fitted once by every chosen method from the same
initialization; the step control then moves all of them through their inner iterations together. Per step
the page skins only the meshes shown (one batched call) and renders them offscreen; the fits, the curves and
each visited step are cached. Below, the test-set evaluation: statistics over many samples, step by step.

Checkpoints: the shipped ones (pretrained/hmr_*.json) and the best checkpoints of HMR training runs found
under ``runs/`` (or the folders listed in the environment variable ``LSR1_HMR_RUNS``, separated by ``:``).
Computation lives in ``lsr1_core.hmr`` (fits, statistics) and ``lsr1_core.viz.hmr`` (figures); the caches in
``explorer.hmr_data`` and ``explorer.step_cache``; the step view's component in ``explorer.components``.
"""
from __future__ import annotations

import os

import numpy as np
import streamlit as st

from explorer import hmr_cache
from explorer import hmr_data as data
from explorer.component_files import plain_figure
from explorer.components.step_view import step_view
from explorer.hmr_export import mesh_download, metrics_csv
from explorer.hmr_prepare import DEFAULT_VIEW
from lsr1_core.errors import LSR1Error
from lsr1_core.hmr import BodyModelError, CameraConfig
from lsr1_core.hmr.compare import FITTERS, LABELS, LEARNED
from lsr1_core.hmr.data import project
from lsr1_core.hmr.render import render_status
from lsr1_core.viz.hmr import (OVERLAY_PX, curves_at, curves_figure, evaluation_figure, evaluation_table,
                               keypoint_figure, mesh_rgb, overlay_at, overlay_figure, overlay_window,
                               sample_grid_figure)

BODY_ANNY = "Anny (embedded)"
BODY_SMPL = "SMPL (from LSR1_SMPL_MODEL)"
NONE = "none"
FITTER_NOTES = {"lsr1_qn": "scale-free, no HMR training"}
FITTER_HELP = {"lsr1_qn": "The form L-SR1 uses by default elsewhere in the project (LSR1Optimizer, the 2-D pages): "
                          "positive semi-definite SR1 with the two-scale H₀, the BFGS fallback and the Armijo "
                          "safeguard, with no learned weights, from the same initializer as Adam and L-BFGS. It "
                          "fits the 2-D keypoints about as fast as L-BFGS; see docs/results_qn_hmr.md."}


# --- controls ------------------------------------------------------------------------------------
def _sidebar(entries: dict[str, dict]) -> dict:
    with st.sidebar:
        st.header("Human mesh recovery")
        body_choice = st.selectbox("Body model", [BODY_ANNY, BODY_SMPL], key="hmr_body",
                                   help="Anny ships with the project. SMPL is licensed separately: set the "
                                        "environment variable LSR1_SMPL_MODEL to your SMPL model file or folder.")
        st.subheader("Checkpoints")
        chosen = {}
        for slot, method in LEARNED.items():
            options = [e["label"] for e in entries.values() if e["method"] == method] + [NONE]
            pref = [e["label"] for e in entries.values() if e["slot"] == slot]
            chosen[slot] = st.selectbox(LABELS[slot], options, index=options.index(pref[0] if pref else NONE),
                                        key=f"hmr_ckpt_{slot}")
        classical = tuple(c for c in FITTERS
                          if st.checkbox(f"{LABELS[c]} ({FITTER_NOTES.get(c, 'classical fitting')})", value=True,
                                         key=f"hmr_cls_{c}", help=FITTER_HELP.get(c)))
        steps = int(st.number_input("Inner iterations", min_value=1, max_value=50, value=15, key="hmr_steps",
                                    help="The paper evaluates 15 (LGD trains with 4, L-SR1 with 8)."))
        if not entries:
            st.caption("No HMR checkpoint found in pretrained/ or "
                       + (os.environ.get("LSR1_HMR_RUNS") or "runs/") + ".")
    return {"body": body_choice, "chosen": chosen, "classical": classical, "steps": steps}


def _sample_controls():
    c1, c2 = st.columns([1, 1])
    source = c1.radio("Sample", ["shipped test set", "random new sample"], key="hmr_source", horizontal=True)
    if source == "shipped test set":
        n = len(data.shipped_test_set())
        idx = int(c2.number_input(f"test sample (0–{n - 1})", min_value=0, max_value=n - 1, value=0, step=1,
                                  key="hmr_index"))
        return ("test", idx), f"test-{idx}"
    seed = int(c2.number_input("seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="hmr_seed"))
    return ("random", seed), f"random-seed{seed}"


def _checkpoints(entries: dict[str, dict], cfg: dict, body_key: tuple) -> tuple[list, dict]:
    """The chosen checkpoints that fit the body model, as (slot, path, mtime), and their training horizons;
    each refusal shown with its real reason."""
    ckpt_key, horizons = [], {}
    for slot, label in cfg["chosen"].items():
        if label == NONE or label not in entries:
            continue
        e = entries[label]
        err, body_mismatch = data.checkpoint_problem(e["path"], e["mtime"], body_key)
        if err:
            why = (f"does not fit the chosen body model ({cfg['body']})" if body_mismatch
                   else "could not be loaded")
            st.error(f"**{LABELS[slot]}**: the checkpoint `{label}` {why} and is left out: {err}")
            continue
        ckpt_key.append((slot, e["path"], e["mtime"]))
        horizons[slot] = e.get("unroll")
    return ckpt_key, horizons


def _fitters_named(fit: dict) -> str:
    names = [LABELS[n] for n in FITTERS if n in fit["poses"]]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


# --- the page ------------------------------------------------------------------------------------
def render():
    st.title("Human mesh recovery")
    st.caption("Fit a body to 2-D keypoints with learned optimizers and watch them refine it step by step: a "
               "qualitative comparison of L-SR1 (blue) and LGD (pink) as in the paper's Figures 5 and 9, with "
               "L-SR1 without the secant penalty, classical Adam / L-BFGS fitting and L-SR1's scale-free qn form "
               "(the project's default form, here with no HMR training; indigo) from the same initialization.")
    data.warm_renderer()
    entries = data.checkpoints(os.environ.get("LSR1_HMR_RUNS"))
    cfg = _sidebar(entries)
    body_key = ("smpl", os.environ.get("LSR1_SMPL_MODEL", "")) if cfg["body"] == BODY_SMPL else ("anny", "")
    data.build_body_with_progress("anny")  # the samples come from the Anny body; SMPL is checked here
    try:
        if body_key[0] != "anny":
            data.get_body(*body_key)
    except BodyModelError as e:
        st.error(f"The body model could not be loaded: {e}")
        return

    sample_key, sample_name = _sample_controls()
    b = data.sample_batch(sample_key)
    kp2d, conf = b.kp2d[0].numpy(), b.conf[0].numpy()
    true_uv = project(b.joints3d, CameraConfig())[0].numpy()
    n_vis = int((conf > 0).sum())

    ckpt_key, horizons = _checkpoints(entries, cfg, body_key)
    if not entries:
        st.info("No HMR checkpoint is installed yet (pretrained/hmr_lgd, hmr_lsr1, hmr_lsr1_nosec are made by "
                "`python -m lsr1_core.hmr.train`, see the README). Classical Adam / L-BFGS fitting from the rest "
                "pose still runs below.")
    elif not ckpt_key:
        st.warning(f"No learned checkpoint is usable with {cfg['body']}; Adam, L-BFGS and the qn form start from the rest pose.")
    if not ckpt_key and not cfg["classical"]:
        st.warning("Choose at least one method in the sidebar.")
        return

    try:
        with st.spinner("fitting every method from the same initialization…"):
            fit = data.fit_sample(body_key, sample_key, tuple(ckpt_key), cfg["classical"], cfg["steps"])
    except LSR1Error as e:
        st.error(f"A checkpoint could not be loaded: {e}")
        return
    fit_key = (sample_key, tuple(ckpt_key), cfg["classical"], cfg["steps"])
    if hmr_cache.DAMAGED:  # empty or damaged cache files (e.g. left by a crash): deleted and computed again
        names = ", ".join(name for name, _ in hmr_cache.DAMAGED[:3]) + (" …" if len(hmr_cache.DAMAGED) > 3 else "")
        st.info(f"{len(hmr_cache.DAMAGED)} damaged cache entr{'y was' if len(hmr_cache.DAMAGED) == 1 else 'ies were'} "
                f"found in {hmr_cache.cache_dir()} and rebuilt ({names}: {hmr_cache.DAMAGED[0][1]}).")
        hmr_cache.DAMAGED.clear()

    left, right = st.columns([1.25, 2])
    left.plotly_chart(keypoint_figure(kp2d, conf, true_uv), key="hmr_keypoints", config={"displayModeBar": False})
    right.markdown(f"**Sample** `{sample_name}`: {n_vis} of 18 keypoints observed "
                   f"({18 - n_vis} missing, marked ✕ and named at their true position), 2-D noise σ = 1 % of the "
                   f"body's box. Body model: {cfg['body']}"
                   + ("; the sample and its ground-truth mesh come from the Anny body." if body_key[0] != "anny"
                      else "."))
    right.caption(f"Fitted {len(fit['poses'])} methods × {cfg['steps']} steps in {sum(fit['seconds'].values()):.2f} s "
                  f"(cached per sample). "
                  + (f"{fitters} start from {LABELS[fit['start']]}'s initializer. "
                     if fit["start"] and (fitters := _fitters_named(fit)) else "")
                  + _initializer_note(fit))
    with right:
        metrics_table(fit)
    linked_view(body_key, fit_key, fit, sample_key, sample_name, kp2d, conf, true_uv)
    several_samples(body_key, tuple(ckpt_key), cfg, list(fit["poses"]))
    test_set_evaluation(body_key, tuple(ckpt_key), cfg, horizons)


def metrics_table(fit: dict) -> None:
    """Every method's metrics at its first and last step (the step control's table is below the curves)."""
    last = len(next(iter(fit["curves"].values()))["f"]) - 1
    lines = ["| method | 2-D error (px) | MPJPE (mm) | PA-MPJPE (mm) |", "|---|---:|---:|---:|"]
    for n, c in fit["curves"].items():
        lines.append(f"| {LABELS[n]} | {c['reproj'][0]:.2f} → {c['reproj'][last]:.2f} | "
                     f"{c['mpjpe'][0]:.1f} → {c['mpjpe'][last]:.1f} | {c['pa_mpjpe'][0]:.1f} → {c['pa_mpjpe'][last]:.1f} |")
    st.markdown("\n".join(lines) + f"\n\nStep 0 → step {last}.")


def _initializer_note(fit: dict) -> str:
    learned = [n for n in LEARNED if n in fit["poses"]]
    if len(learned) < 2:
        return ""
    p0 = [fit["poses"][n][0] for n in learned]
    if all(np.allclose(p, p0[0], atol=1e-6) for p in p0[1:]):
        return "All learned methods share step 0 (the same initializer)."
    return "Note: the learned checkpoints have different initializers, so their step 0 differs."


@st.cache_data(max_entries=32, show_spinner=False)
def _overlay_base(sample_key: tuple, names: tuple, _kp2d: np.ndarray, _conf: np.ndarray) -> dict:
    return plain_figure(overlay_figure({n: None for n in names}, _kp2d, _conf, 0))


@st.cache_data(max_entries=32, show_spinner=False)
def _curves_base(fit_key: tuple, _curves: dict) -> dict:
    return plain_figure(curves_figure(_curves, 0))


@st.fragment
def linked_view(body_key, fit_key, fit, sample_key, sample_name, kp2d, conf, true_uv):
    """The step control and everything it drives; a fragment, so stepping reruns only this part."""
    steps = len(next(iter(fit["curves"].values()))["f"]) - 1
    names = list(fit["poses"])
    c1, c2, c3 = st.columns([3, 1, 2.4])
    # The slider is a new widget when the number of steps changes; it then starts at the step it was on.
    start = min(int(st.session_state.get("hmr_step", steps)), steps)
    step = int(c1.slider("inner iteration (all methods together)", 0, steps, value=start, key="hmr_step"))
    show_gt = c2.toggle("ground truth", value=False, key="hmr_gt")
    default3d = [n for n in DEFAULT_VIEW["meshes"] if n in names] or names[:2]
    # keyed by the methods on offer, so that a new set of methods starts from the default choice
    chosen = c3.multiselect("meshes shown (3-D view and renders)", names, default=default3d, format_func=LABELS.get,
                            key="hmr_in3d_" + "-".join(names),
                            help="Each mesh shown costs a skinning and an offscreen render per step; the "
                                 "curves and the downloads always cover every method.")
    body, cache, key = (lambda: data.get_body(*body_key)), data.step_cache(), (body_key, fit_key)
    # set-up's disk cache may hold this view (the page's default): then no body model is needed to show it
    stored = data.stored_view(fit["disk_key"]) if fit.get("disk_key") and step == steps else {}
    faces = data.faces_of(body_key, stored.get("faces"))
    gt = (data.gt_vertices(sample_key), data.faces_of(("anny", ""))) if show_gt else None

    def shown_at(verts: dict) -> dict:
        out = {n: (verts[n], faces) for n in chosen if n in verts}
        if gt is not None:
            out["gt"] = gt
        return out

    def images_at(s: int, shown: dict, stored_images: dict | None = None) -> tuple[dict, tuple]:
        """Every shown mesh rendered over one window that holds them all and the keypoints."""
        window = overlay_window([v for v, _ in shown.values()], kp2d, conf, true_uv)
        if stored_images and window != stored.get("window"):
            stored_images = None
        return {n: cache.image((key, s, n) if n != "gt" else ("gt", sample_key), v, f, mesh_rgb(n), window,
                               OVERLAY_PX, (stored_images or {}).get(n)) for n, (v, f) in shown.items()}, window

    with st.spinner("building the body model (seconds, once per session of the server)…"):
        shown = shown_at(cache.meshes(body, key, fit, step, tuple(chosen), stored.get("meshes")))
    # stored renders need no renderer (asking whether it works waits for its start-up: seconds)
    ready = bool(shown) and set(shown) <= set(stored.get("images") or ()) and \
        overlay_window([v for v, _ in shown.values()], kp2d, conf, true_uv) == stored.get("window")
    problem = None if ready else render_status()
    overlay = None
    if problem:
        st.info(f"The rendered images are missing: {problem}. The 3-D view works without them.")
    elif shown:
        images, window = images_at(step, shown, stored.get("images"))
        overlay = overlay_at(_overlay_base(sample_key, tuple(images), kp2d, conf), images, step, window)
    # the 3-D view keeps the box of the steps seen with these meshes, so that it stays still while stepping
    box_key = "hmr_box:" + repr((fit_key, tuple(shown)))
    st.session_state[box_key] = step_view(shown, step, overlay, curves_at(
        _curves_base(fit_key, fit["curves"]), fit["curves"], step), box=st.session_state.get(box_key))
    # the neighbouring steps, while the user looks at this one
    cache.prefetch(body, key, fit, [s for s in (step - 1, step + 1) if 0 <= s <= steps], tuple(chosen), faces,
                   render=None if problem else (lambda s, verts: images_at(s, shown_at(verts))),
                   delay=0.0 if data.body_built(body_key) else 3.0)
    rows = [f"| {LABELS[n]} | {c['reproj'][step]:.2f} | {c['mpjpe'][step]:.1f} | {c['pa_mpjpe'][step]:.1f} | "
            f"{c['f'][step]:.5f} |" for n, c in fit["curves"].items()]
    st.markdown(f"**At step {step}**\n\n| method | 2-D error (px) | MPJPE (mm) | PA-MPJPE (mm) | objective f |\n"
                "|---|---:|---:|---:|---:|\n" + "\n".join(rows))

    d1, d2, d3 = st.columns([1, 1.4, 1.4])
    fmt = d1.radio("mesh format", ["OBJ", "PLY"], horizontal=True, key="hmr_fmt")
    ext, mime = ("obj", "text/plain") if fmt == "OBJ" else ("zip", "application/zip")

    def all_meshes():  # built when the button is pressed: every method, and the ground truth when shown
        out = {n: (v, faces) for n, v in cache.meshes(body, key, fit, step, tuple(names)).items()}
        if gt is not None:
            out["gt"] = gt
        return mesh_download(out, fmt, step, sample_name)

    d2.download_button(f"Meshes at step {step} ({fmt})", all_meshes,
                       f"hmr_{sample_name}_step{step}.{ext}", mime, key="hmr_dl_mesh", on_click="ignore")
    d3.download_button("Per-step metrics (CSV)", lambda: metrics_csv(fit["curves"], LABELS),
                       f"hmr_{sample_name}_metrics.csv", "text/csv", key="hmr_dl_csv", on_click="ignore")


@st.fragment
def several_samples(body_key: tuple, ckpt_key: tuple, cfg: dict, methods: list[str]) -> None:
    """Several test samples side by side: one row each, every method's render at one step (a fragment)."""
    st.subheader("Several samples")
    if body_key[0] != "anny":
        st.caption("The test set is made with the Anny body; choose it in the sidebar to see several samples.")
        return
    n_all = len(data.shipped_test_set())
    c1, c2, c3 = st.columns([2, 2, 1])
    indices = c1.multiselect("test samples side by side (up to 6)", list(range(n_all)), max_selections=6,
                             key="hmr_grid_samples", help="Each sample is fitted as the view above fits one "
                             "(and shares its cache); each row is rendered over a window framed on its meshes.")
    names = c2.multiselect("methods", methods + ["gt"], default=[n for n in ("lsr1", "lgd", "gt")
                                                                  if n in methods + ["gt"]],
                           format_func=LABELS.get, key="hmr_grid_methods_" + "-".join(methods))
    step = int(c3.number_input("step", 0, cfg["steps"], cfg["steps"], key="hmr_grid_step"))
    if not indices or not names:
        st.caption("Choose test samples to compare them at one step.")
        return
    problem = render_status()
    if problem:
        st.info(f"The rendered images are missing: {problem}.")
    with st.spinner(f"fitting {len(indices)} samples and rendering them…"):
        rows = data.sample_grid(body_key, tuple(indices), ckpt_key, cfg["classical"], cfg["steps"], step,
                                tuple(names), render=not problem)
    st.plotly_chart(sample_grid_figure(rows, names, step), key="hmr_grid", config={"displayModeBar": False})


def test_set_evaluation(body_key: tuple, ckpt_key: tuple, cfg: dict, horizons: dict) -> None:
    """Mean, median and spread of MPJPE and PA-MPJPE per step and method over the first n test samples."""
    st.subheader("Test-set evaluation")
    if body_key[0] != "anny":
        st.caption("The test set is made with the Anny body; choose it in the sidebar to evaluate on it.")
        return
    n_all = len(data.shipped_test_set())
    c1, c2 = st.columns([2, 1])
    n = int(c1.select_slider("test samples (the first n of the shipped test set)",
                             options=[8, 16, 32, 64, 128, n_all], value=32, key="hmr_eval_n"))
    run = c2.button("Evaluate", key="hmr_eval_run", help="Fits every chosen method on these samples, "
                    f"{cfg['steps']} inner steps; a few seconds per method for 32 samples on 2 cores.")
    args = (body_key, n, ckpt_key, cfg["classical"], cfg["steps"])
    if not run and st.session_state.get("hmr_eval_args") != args:
        st.caption("Press Evaluate for statistics over many samples: each method's median, mean and quartiles "
                   "of MPJPE and PA-MPJPE at every inner step, the number of steps each learned method was "
                   "trained for, and its time per step.")
        return
    st.session_state["hmr_eval_args"] = args
    bar = st.progress(0.0, text="evaluating…")

    def progress(i, total, name):
        bar.progress(i / max(total, 1), text=f"fitting {LABELS.get(name, name)} on {n} samples…" if name else "")
    ev = data.evaluation(*args, _progress=progress)
    bar.empty()
    shown = {k: v for k, v in horizons.items() if k in ev["order"] and v}
    bands = st.multiselect("quartile band for", ev["order"], default=[n for n in ("lsr1", "lgd") if n in ev["order"]],
                           format_func=LABELS.get, key="hmr_eval_bands")
    st.plotly_chart(evaluation_figure(ev, shown, bands), key="hmr_eval_fig")
    st.markdown(evaluation_table(ev) + f"\n\nMedian [quartiles] in mm over {ev['n']} test samples; ms per step: "
                "the fit's wall time over the steps for all samples at once (the initializer included).")


if __name__ == "__main__":  # run as a page; importing it (for its functions) renders nothing
    render()
