"""Curvature & secant: how each solver's curvature model compares with the true inverse Hessian."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from explorer.state import all_specs, sidebar
from explorer.views.trajectories import compute, settings
from lsr1_core.errors import LSR1Error
from lsr1_core.learned import LSR1Solver
from lsr1_core.objectives import quadratic_split, teaching_function
from lsr1_core.solvers import make_solver, run
from lsr1_core.viz.explore import newton_cosines, operator_matrix, secant_series, spectra_over_steps, true_inverse_hessian
from lsr1_core.viz.plots import ellipse_figure, series_figure, spectra_figure
from lsr1_core.viz.teaching import (escaped_at, fmt_list, lsr1_matrix_from_vectors, sr1_indefinite_example, tex_mat,
                                    tex_num, tex_vec)

vec, mat = tex_vec, tex_mat


def two_d_section(ctx):
    with st.sidebar:
        st.header("Problem")
        args = settings("cv_", ctx["models"], default_fn="quadratic", default_steps=30)
    try:
        result = compute(*args)
    except LSR1Error as e:
        st.error(str(e))
        return
    for lab, err in result.errors.items():
        st.error(f"{lab}: {err}")
    fn, fn_kwargs = args[0], args[1]
    obj = teaching_function(fn, **fn_kwargs)
    T = max((t.steps for t in result.traces.values()), default=0)
    if T == 0:
        st.info("choose at least one solver")
        return
    two_d_step_view(result, obj, T)


SECANT_FORMS = {"after the update: B_{k+1} q_k = p_k (textbook)": "after",
                "the operator that made the step: B_k q_k = p_k (L-SR1's Eq. 8)": "made"}


@st.fragment
def two_d_step_view(result, obj, T: int):
    """The step slider and everything it drives. A fragment: moving the slider reruns only this
    part; the solvers' runs (cached) and the sidebar are not touched."""
    step = st.slider("step k", 1, T, min(3, T), key="cv_step")
    form = SECANT_FORMS[st.radio("secant residual of", list(SECANT_FORMS), key="cv_form", horizontal=True,
                                 help="Classical SR1 and L-BFGS build B_{k+1} so that B_{k+1} q_k = p_k exactly: "
                                      "the textbook secant condition. L-SR1's training penalty (Eq. 8) is on the "
                                      "operator that made the step.")]
    c1, c2 = st.columns(2)
    c1.plotly_chart(series_figure(result.cosines, step, "cos(d_k, Newton direction)", yrange=[-1.05, 1.05]),
                    key="cv_cos")
    series = result.secant if form == "after" else (result.secant_made or result.secant)
    sec = {k: v for k, v in series.items() if np.isfinite(v).any()}
    c2.plotly_chart(series_figure(sec, step, "‖p_k − B_{k+1} q_k‖ / ‖p_k‖" if form == "after"
                                  else "‖p_k − B_k q_k‖ / ‖p_k‖", log=True), key="cv_sec")
    with_ops = [l for l, t in result.traces.items() if any(o is not None for o in t.operators)]
    if not with_ops:
        st.info("none of the chosen solvers keeps a curvature matrix")
        return
    escaped = {l: escaped_at(result.traces[l], obj.bounds) for l in with_ops}
    sane = [l for l in with_ops if escaped[l] < 0 or escaped[l] > step]
    pref = [l for l in sane if l.startswith("L-SR1")] + [l for l in sane if l.startswith("SR1")] + sane + with_ops
    who = st.selectbox("Curvature model to inspect", with_ops, index=with_ops.index(pref[0]), key="cv_who")
    tr = result.traces[who]
    k = min(step, tr.steps) - 1
    esc = escaped[who]
    if 0 <= esc <= k + 1:
        st.warning(f"{who} blew up: x_{esc} is far outside the plotted range or not finite"
                   + (f" ({tr.reason[0]})" if tr.reason[0] else "")
                   + f". Its matrices and residuals from step {esc} on are numbers of a diverging run, not "
                   "curvature: choose an earlier step, another solver"
                   + (", a smaller L-SR1 step scale (sidebar) or a model trained on this function."
                      if who.startswith("L-SR1") else " or a smaller learning rate."))
        return
    M = operator_matrix(tr, k)
    x = tr.x[k]
    Hinv = true_inverse_hessian(obj, x)
    op = tr.operators[k]
    W = op.W[0].double().numpy() if hasattr(op, "W") else None
    c3, c4 = st.columns(2)
    c3.plotly_chart(spectra_figure(spectra_over_steps(tr, obj), who, step), key="cv_spec")
    c4.plotly_chart(ellipse_figure(obj, obj.bounds, x[0].numpy(), M, Hinv, W, label=f"B ({who})", label_solver=who),
                    key="cv_ell")
    secant_equation(tr, k, who, M, form)
    if M is not None:
        ev = np.linalg.eigvalsh(0.5 * (M + M.T))
        st.caption(f"eigenvalues of B_{k} ({who}): {fmt_list(ev)} — of the true H⁻¹ at x_{k}: "
                   f"{fmt_list(np.linalg.eigvalsh(Hinv))}")


def secant_equation(tr, k: int, who: str, M_made, form: str) -> None:
    """The secant equation with this step's numbers, in the chosen form."""
    p = (tr.x[k + 1] - tr.x[k])[0].numpy()
    q = (tr.g[k + 1] - tr.g[k])[0].numpy()
    M = operator_matrix(tr, k + 1) if form == "after" else M_made
    sub = f"{k + 1}" if form == "after" else f"{k}"
    st.markdown(f"**Secant equation at step {k + 1}** for {who}: $B_{{{sub}}} q = p$ with "
                f"$p = x_{{{k + 1}}} - x_{{{k}}}$, $q = g_{{{k + 1}}} - g_{{{k}}}$"
                + (" (the textbook form: the matrix built after seeing this p, q)" if form == "after"
                   else " (the matrix that made this step, as in L-SR1's training penalty)"))
    if M is None:
        st.info(f"{who} has no B_{sub} (the run ended at step {tr.steps})" if form == "after"
                else f"{who} keeps no matrix at this step")
        return
    if not np.any(p):
        st.info(f"p = 0: {who} did not move at step {k + 1}, so the secant equation says nothing here.")
        return
    Bq = M @ q
    rel = np.linalg.norm(p - Bq) / np.linalg.norm(p)
    st.latex(f"p = {tex_vec(p)},\\quad B_{{{sub}}} q = {tex_mat(M)}{tex_vec(q)} = {tex_vec(Bq)},\\quad "
             f"\\frac{{\\|p - B_{{{sub}}} q\\|}}{{\\|p\\|}} = {tex_num(rel, 3)}")


def psd_lesson():
    st.subheader("Why positive semi-definiteness matters")
    fn = st.selectbox("Example", ["himmelblau", "beale", "rosenbrock"], key="psd_fn")
    f = teaching_function(fn)
    ex = sr1_indefinite_example(fn, f.default_start)
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Classical SR1**: $B_k = B_{k-1} + \\frac{w w^\\top}{w^\\top q}$, $w = p - B_{k-1}q$. "
                    "When $w^\\top q < 0$ the update subtracts curvature and $B$ can become indefinite.")
        if ex is None:
            st.info(f"SR1 stays positive definite on {fn} from its default start; try another example.")
        else:
            st.latex(f"B = {mat(ex['B'])},\\quad \\lambda(B) = ({ex['eig'][0]:.3g},\\ {ex['eig'][1]:.3g})")
            st.latex(f"g^\\top d = {float(ex['g'] @ ex['d']):.3g} < 0 \\Rightarrow x - d \\text{{ goes uphill}}")
            st.markdown(f"At step {ex['step']}, $f$ went from {ex['f_before']:.4g} to {ex['f_after']:.4g}.")
    with c2:
        st.markdown("**L-SR1**: $\\tilde B = I + \\sum_i v_i v_i^\\top$. Every term is an outer product, so "
                    "$u^\\top \\tilde B u = \\|u\\|^2 + \\sum_i (v_i^\\top u)^2 \\ge \\|u\\|^2$: all eigenvalues are "
                    "at least 1 and $g^\\top \\tilde B g > 0$ — always a descent direction.")
        rng = np.random.default_rng(int(st.session_state.get("seed", 0)))
        V = rng.normal(size=(3, 2))
        M, w = lsr1_matrix_from_vectors(V)
        st.latex(f"\\tilde B = I + \\sum_{{i=1}}^{{3}} v_i v_i^\\top = {mat(M)},\\quad \\lambda = "
                 f"({w[0]:.3g},\\ {w[1]:.3g}) \\ge 1")
        st.caption("random v_i (seed from the sidebar); what the secant penalty adds is *which* v_i: ones for "
                   "which p ≈ B̃q.")


@st.cache_data(show_spinner="running on the test quadratic…", max_entries=16)
def nd_run(n: int, row: int, steps: int, memory: int, models: tuple):
    q64, x064 = quadratic_split("test", n=n, size=max(row + 1, 4), dtype=torch.float64)
    q64 = q64.subset([row])
    x0 = x064[row:row + 1]
    out = {}
    solvers = {"L-BFGS": make_solver("lbfgs", history=memory, line_search="strong_wolfe"),
               "SR1 (classical)": make_solver("sr1", memory=memory)}
    for label, path in models:
        s = LSR1Solver(checkpoint=path, memory=memory)
        s.net.double()
        solvers[label] = s
    cos, sec, spectra = {}, {}, {}
    for lab, s in solvers.items():
        tr = run(s, q64, x0, steps)
        cos[lab] = newton_cosines(tr, q64)
        sec[lab] = secant_series(tr)
        if n <= 200:
            spectra[lab] = spectra_over_steps(tr, q64)
    return cos, sec, spectra


def nd_section(ctx):
    st.subheader("N-dimensional test quadratic")
    c1, c2, c3 = st.columns(3)
    n = int(c1.select_slider("N", [2, 5, 10, 20, 50, 100], value=10, key="nd_n"))
    row = int(c2.number_input("problem (row of the test set)", 0, 31, 0, key="nd_row"))
    steps = int(c3.slider("steps", 5, 60, 20, key="nd_steps"))
    memory = 8
    from explorer.state import lsr1_specs
    models = tuple((lab, spec.checkpoint) for lab, spec in lsr1_specs(ctx["models"]).items())
    try:
        cos, sec, spectra = nd_run(n, row, steps, memory, models)
    except LSR1Error as e:
        st.error(str(e))
        return
    nd_step_view(cos, sec, spectra, steps)
    st.caption("N ≤ 20: the paper's test quadratics (condition ≤ 1000); above, the same construction without the "
               "filter, which almost no AᵀA passes there.")


@st.fragment
def nd_step_view(cos, sec, spectra, steps: int):
    """The N-D step slider and its plots, rerun alone when the slider moves."""
    k = st.slider("step k", 1, steps, min(10, steps), key="nd_step")
    a, b = st.columns(2)
    a.plotly_chart(series_figure(cos, k, "cos(d_k, Newton direction)", yrange=[-1.05, 1.05]), key="nd_cos")
    b.plotly_chart(series_figure({l: v for l, v in sec.items() if np.isfinite(v).any()}, k, "‖p − Bq‖ / ‖p‖",
                                 log=True), key="nd_sec")
    if spectra:
        who = st.selectbox("spectrum of", list(spectra), key="nd_who")
        st.plotly_chart(spectra_figure(spectra[who], who, k), key="nd_spec")


def render():
    ctx = sidebar()
    st.title("Curvature & secant")
    st.caption("For the run of the sidebar's problem: how well each direction aligns with Newton's, how far each "
               "curvature model is from the secant equation p = Bq, and its eigenvalues against the true inverse "
               "Hessian.")
    tabs = st.tabs(["2-D run", "Why PSD matters", "N-dimensional quadratic"])
    with tabs[0]:
        two_d_section(ctx)
    with tabs[1]:
        psd_lesson()
    with tabs[2]:
        nd_section(ctx)


if __name__ == "__main__":  # run as a page; importing it (for its widgets) renders nothing
    render()
