"""The Curvature & secant page's two lessons: "Anatomy of one update" and "Why PSD matters, drawn" (widgets and
text only; the numbers and figures come from lsr1_core.viz.lessons)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from explorer.state import chosen_models, keys, seed
from lsr1_core.objectives import teaching_function
from lsr1_core.viz.lessons import (anatomy, anatomy_figure, pair_note, psd_comparison, psd_figure,
                                  secant_verdict)
from lsr1_core.viz.teaching import escaped_at, lsr1_matrix_from_vectors, tex_mat, tex_num, tex_vec

ELLIPSES = ("**Ellipses** (centred at $x_{k+1}$, axes along each matrix's eigenvectors, half-lengths ∝ its "
            "eigenvalues, one shared scale):",
            "- black, Newton's $H^{-1}(x_{k+1})$: how far a step should go in each direction here; the target.",
            "- solid, $B_{k+1}$: the solver's inverse-curvature model after this update; the closer to black, "
            "the more Newton-like the next step.",
            "- dotted, $B_k$: the model before the update; the change from dotted to solid is the update.")


@st.cache_data(show_spinner=False, max_entries=32)
def cached_psd(fn: str, start: tuple, checkpoint: str | None, scale: float):
    return psd_comparison(fn, start, checkpoint, scale)


@st.fragment
def anatomy_lesson(result, obj) -> None:
    """B_k → B_{k+1} for one solver and step of the sidebar's run."""
    st.markdown("A quasi-Newton method keeps $B_k \\approx H^{-1}$ and steps $x_{k+1} = x_k - \\alpha B_k g_k$. "
                "After the step it knows a new pair $p = x_{k+1} - x_k$, $q = g_{k+1} - g_k$; the **secant "
                "condition** asks the next matrix to explain it: $B_{k+1} q = p$. SR1 adds the one rank-one "
                "term that makes it hold: $w = p - B_k q$, $B_{k+1} = B_k + \\frac{w w^\\top}{w^\\top q}$.")
    with_ops = [l for l, t in result.traces.items() if any(o is not None for o in t.operators)]
    if not with_ops:
        st.info("None of the chosen solvers keeps a matrix; add SR1 (classical), L-BFGS or gradient descent.")
        return
    pref = [l for l in with_ops if l.startswith("SR1")] + with_ops
    c1, c2 = st.columns(2)
    who = c1.selectbox("solver", with_ops, index=with_ops.index(pref[0]), key=keys.anatomy.who,
                       help="try SR1 (classical) or L-BFGS (satisfied) against gradient descent (violated)")
    tr = result.traces[who]
    last = tr.steps - 1
    esc = escaped_at(tr, obj.bounds)
    if esc >= 0:
        last = min(last, esc - 2)
    if last < 0:
        st.warning(f"{who} blew up at once on this function; choose another solver or a smaller step scale.")
        return
    k = int(c2.slider("update after step k", 0, last, min(2, last), key=keys.anatomy.step))
    a = anatomy(tr, obj, k)
    st.plotly_chart(anatomy_figure(obj, a, who), key=keys.anatomy.figure)
    st.markdown("\n".join(ELLIPSES))
    st.markdown(f"**The update after step {k}** ({who}):")
    st.latex(f"p = x_{{{k + 1}}} - x_{{{k}}} = {tex_vec(a['p'])},\\quad q = g_{{{k + 1}}} - g_{{{k}}} = "
             f"{tex_vec(a['q'])}")
    if a["B"] is not None and a["w"] is not None:
        st.latex(f"B_{{{k}}} = {tex_mat(a['B'])},\\quad w = p - B_{{{k}}} q = {tex_vec(a['w'])},\\quad "
                 f"w^\\top q = {tex_num(a['wq'])}")
    if a["rank_one"] is not None:
        st.latex(f"\\frac{{w w^\\top}}{{w^\\top q}} = {tex_mat(a['rank_one'])},\\quad "
                 f"\\Big(B_{{{k}}} + \\frac{{w w^\\top}}{{w^\\top q}}\\Big) q = B_{{{k}}} q + w = p")
        st.caption("The SR1 term makes the secant condition hold by construction; a solver may build its "
                   "Bₖ₊₁ another way (L-BFGS from its stored pairs, L-SR1 from learned vectors).")
    if a["Bq_next"] is not None:
        st.latex(f"\\text{{check: }} B_{{{k + 1}}} q = {tex_mat(a['B_next'])}{tex_vec(a['q'])} = "
                 f"{tex_vec(a['Bq_next'])} \\;\\text{{vs}}\\; p = {tex_vec(a['p'])}")
    note = pair_note(tr, k)
    if note:
        st.info(f"What {who} did with this pair: {note}.")
    verdict = secant_verdict(a)
    (st.success if verdict.startswith("Satisfied") else st.warning if verdict.startswith("Violated")
     else st.info)(verdict)


def psd_drawn(ctx) -> None:
    """Classical SR1's uphill step beside L-SR1's step from the same point, drawn and in numbers."""
    st.subheader("Why positive semi-definiteness matters")
    c1, c2 = st.columns(2)
    fn = c1.selectbox("Example", ["himmelblau", "rosenbrock"], key=keys.psd.function)
    models = ctx["models"]
    labels = chosen_models(models) or list(models)
    model = c2.selectbox("L-SR1 model", labels, key=keys.psd.model) if labels else None
    f = teaching_function(fn)
    ex = cached_psd(fn, tuple(f.default_start), str(models[model]) if model else None, ctx.get("scale", 1.0))
    if ex is None:
        st.info(f"SR1 stays positive definite on {fn} from its default start; try another example.")
        return
    name = "L-SR1 " + model.split(": ", 1)[-1] if model else "L-SR1"
    left, right = st.columns([3, 2])
    left.plotly_chart(psd_figure(f, ex, name), key=keys.psd.figure)
    with right:
        st.markdown("**Classical SR1**: $B_k = B_{k-1} + \\frac{w w^\\top}{w^\\top q}$. When $w^\\top q < 0$ the "
                    "update subtracts curvature and $B$ can become indefinite; then $d = Bg$ may point uphill.")
        st.latex(f"B = {tex_mat(ex['B'])}")
        st.latex(f"\\lambda(B) = ({tex_num(ex['eig'][0], 3)},\\ {tex_num(ex['eig'][1], 3)})")
        st.latex(f"g^\\top d = {tex_num(float(ex['g'] @ ex['sr1_d']), 3)} < 0 \\Rightarrow x - d "
                 "\\text{ goes uphill}")
        st.markdown(f"At step {ex['step']} of SR1 (fixed step, no line search), $f$ went from {ex['f']:.4g} to "
                    f"{ex['sr1_f']:.4g}: the red arrow points into the shaded uphill side.")
        st.markdown("**L-SR1**: $\\tilde B = I + \\sum_i v_i v_i^\\top \\succeq 0$ (the paper's form; the "
                    "scale-free form keeps $\\tilde B \\succeq 0$ too), so $g^\\top \\tilde B g \\ge 0$: from the "
                    f"same point, {name}'s step never starts uphill.")
        if ex["lsr1_error"]:
            st.error(f"{name}: {ex['lsr1_error']}")
        elif ex["lsr1_d"] is not None:
            st.latex(f"g^\\top \\tilde B g = {tex_num(float(ex['g'] @ ex['lsr1_d']), 3)} > 0")
            if ex["lsr1_f"] > ex["f"]:
                st.caption(f"{name}'s direction is downhill, but its step length overshoots here (f rose to "
                           f"{ex['lsr1_f']:.4g}): lower the L-SR1 step scale in the sidebar and watch the arrow "
                           "shorten; PSD fixes the direction, not the length.")
    rng = np.random.default_rng(seed())
    M, w = lsr1_matrix_from_vectors(rng.normal(size=(3, 2)))
    st.latex(f"\\text{{e.g. random }} v_i:\\ \\tilde B = I + \\sum_{{i=1}}^{{3}} v_i v_i^\\top = {tex_mat(M)},\\quad "
             f"\\lambda = ({tex_num(w[0], 3)},\\ {tex_num(w[1], 3)}) \\ge 1")
