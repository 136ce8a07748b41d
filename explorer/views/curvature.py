"""Curvature & secant: how each solver's curvature model compares with the true inverse Hessian."""
from __future__ import annotations

import numpy as np
import streamlit as st

from explorer.lessons import anatomy_lesson, psd_drawn
from explorer.problem import Setting, compute, settings
from explorer.state import keys, lsr1_specs, sidebar
from lsr1_core.errors import LSR1Error
from lsr1_core.viz.explore import operator_matrix, run_nd, spectra_over_steps, true_inverse_hessian
from lsr1_core.viz.lessons import pair_notes
from lsr1_core.viz.plots import ellipse_figure, mark_events, series_figure, spectra_figure
from lsr1_core.viz.teaching import escaped_at, fmt_list, tex_mat, tex_num, tex_vec


def problem_settings(ctx) -> Setting | LSR1Error:
    """The sidebar's problem, or what is wrong with it (shown by ``problem_run`` in the open tab)."""
    st.header("Problem")
    try:
        return settings(keys.problem("curvature"), ctx["models"], default_fn="quadratic", default_steps=30)
    except LSR1Error as e:
        return e


def problem_run(setting: Setting | LSR1Error):
    """The sidebar's problem's (cached) run: (result, objective, T), or None after an error."""
    if isinstance(setting, LSR1Error):
        st.error(str(setting))
        return None
    try:
        result = compute(setting)
    except LSR1Error as e:
        st.error(str(e))
        return None
    for lab, err in result.errors.items():
        st.error(f"{lab}: {err}")
    obj = setting.objective()
    T = max((t.steps for t in result.traces.values()), default=0)
    if T == 0:
        st.info("choose at least one solver")
        return None
    return result, obj, T


SECANT_FORMS = {"after the update: Bₖ₊₁qₖ = pₖ (textbook)": "after",
                "the operator that made the step: Bₖqₖ = pₖ (L-SR1's Eq. 8)": "made"}


@st.fragment
def two_d_step_view(result, obj, T: int):
    """The step slider and everything it drives. A fragment: moving the slider reruns only this
    part; the solvers' runs (cached) and the sidebar are not touched."""
    step = st.slider("step k", 1, T, min(3, T), key=keys.curvature.step)
    form = SECANT_FORMS[st.radio("secant residual of", list(SECANT_FORMS), key=keys.curvature.form,
                                 horizontal=True,
                                 help="Classical SR1 and L-BFGS build B_{k+1} so that B_{k+1} q_k = p_k exactly: "
                                      "the textbook secant condition. L-SR1's training penalty (Eq. 8) is on the "
                                      "operator that made the step. Near the minimiser SR1 and L-BFGS skip pairs "
                                      "too small to trust (pᵀq below a threshold); there B_{k+1} ignores that step.")]
    c1, c2 = st.columns(2)
    c1.plotly_chart(series_figure(result.cosines, step, "cos(d_k, Newton direction)", yrange=[-1.05, 1.05]),
                    key=keys.curvature.cos)
    series = result.secant if form == "after" else (result.secant_made or result.secant)
    sec = {k: v for k, v in series.items() if np.isfinite(v).any()}
    sec_fig = series_figure(sec, step, "‖pₖ − Bₖ₊₁qₖ‖ / ‖pₖ‖" if form == "after" else "‖pₖ − Bₖqₖ‖ / ‖pₖ‖", log=True)
    notes = {lab: pair_notes(result.traces[lab]) for lab in sec if lab in result.traces}
    for lab, n in notes.items():
        mark_events(sec_fig, lab, sec[lab], n)
    c2.plotly_chart(sec_fig, key=keys.curvature.sec)
    noted = {lab: n for lab, n in notes.items() if n}
    if noted:
        def kinds(n):
            by = {}
            for k, text in n.items():
                by.setdefault(text.split(":")[0].split(" (")[0], []).append(k + 1)
            return "; ".join(f"{kind} at step{'s' if len(ks) > 1 else ''} "
                             + ", ".join(map(str, ks[:6])) + (" …" if len(ks) > 6 else "") for kind, ks in by.items())
        c2.caption("Marked steps (hover for the reason) — " + " | ".join(f"{lab}: {kinds(n)}"
                                                                         for lab, n in noted.items())
                   + ". A skipped pair or a restart leaves Bₖ₊₁qₖ ≠ pₖ; a BFGS update satisfies it; once converged, "
                     "p and q are rounding noise.")
    with_ops = [l for l, t in result.traces.items() if any(o is not None for o in t.operators)]
    if not with_ops:
        st.info("none of the chosen solvers keeps a curvature matrix")
        return
    escaped = {l: escaped_at(result.traces[l], obj.bounds) for l in with_ops}
    sane = [l for l in with_ops if escaped[l] < 0 or escaped[l] > step]
    pref = [l for l in sane if l.startswith("L-SR1")] + [l for l in sane if l.startswith("SR1")] + sane + with_ops
    who = st.selectbox("Curvature model to inspect", with_ops, index=with_ops.index(pref[0]),
                       key=keys.curvature.who)
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
    c3.plotly_chart(spectra_figure(spectra_over_steps(tr, obj), who, step), key=keys.curvature.spectra)
    c4.plotly_chart(ellipse_figure(obj, obj.bounds, x[0].numpy(), M, Hinv, W, label=f"B ({who})", label_solver=who),
                    key=keys.curvature.ellipse)
    secant_equation(tr, k, who, M, form)
    if M is not None:
        ev = np.linalg.eigvalsh(0.5 * (M + M.T))
        st.caption(f"eigenvalues of B{k} ({who}): {fmt_list(ev)} — of the true H⁻¹ at x_{k}: "
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


@st.cache_data(show_spinner="running on the test quadratic…", max_entries=16)
def nd_run(n: int, row: int, steps: int, memory: int, models: tuple):
    return run_nd(n, row, steps, memory, models)


def nd_section(ctx):
    st.subheader("N-dimensional test quadratic")
    c1, c2, c3 = st.columns(3)
    n = int(c1.select_slider("N", [2, 5, 10, 20, 50, 100], value=10, key=keys.nd.n))
    row = int(c2.number_input("problem (row of the test set)", 0, 31, 0, key=keys.nd.row))
    steps = int(c3.slider("steps", 5, 60, 20, key=keys.nd.steps))
    memory = 8
    models = tuple(lsr1_specs(ctx["models"]).values())
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
    k = st.slider("step k", 1, steps, min(10, steps), key=keys.nd.step)
    a, b = st.columns(2)
    a.plotly_chart(series_figure(cos, k, "cos(d_k, Newton direction)", yrange=[-1.05, 1.05]), key=keys.nd.cos)
    b.plotly_chart(series_figure({l: v for l, v in sec.items() if np.isfinite(v).any()}, k, "‖p − Bq‖ / ‖p‖",
                                 log=True), key=keys.nd.sec)
    if spectra:
        who = st.selectbox("spectrum of", list(spectra), key=keys.nd.who)
        st.plotly_chart(spectra_figure(spectra[who], who, k), key=keys.nd.spectra)


def render():
    ctx = sidebar()
    st.title("Curvature & secant")
    st.caption("For the run of the sidebar's problem: how well each direction aligns with Newton's, how far each "
               "curvature model is from the secant equation, and its eigenvalues against the true inverse "
               "Hessian; then one update taken apart, and why L-SR1 keeps its matrix positive semi-definite.")
    # Lazy tabs: only the open tab computes and draws (a first visit ran all four: the N-D run alone is ~1 s)
    names = ["2-D run", "Anatomy of one update", "Why PSD matters", "N-dimensional quadratic"]
    tabs = st.tabs(names, key=keys.curvature.tab, on_change="rerun")
    with st.sidebar:  # the problem's widgets stay in the sidebar whichever tab is open
        setting = problem_settings(ctx)
    if tabs[0].open:
        with tabs[0]:
            run = problem_run(setting)
            if run:
                two_d_step_view(*run)
    if tabs[1].open:
        with tabs[1]:
            run = problem_run(setting)
            if run:
                anatomy_lesson(run[0], run[1])
    if tabs[2].open:
        with tabs[2]:
            psd_drawn(ctx)
    if tabs[3].open:
        with tabs[3]:
            nd_section(ctx)


if __name__ == "__main__":  # run as a page; importing it (for its widgets) renders nothing
    render()
