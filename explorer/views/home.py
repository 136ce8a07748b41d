"""Home page: what L-SR1 is and how to read the app."""
import streamlit as st

st.title("L-SR1 Explorer")
st.markdown(r"""
**L-SR1** (Lifshitz et al., arXiv 2508.12270) is a *learned* quasi-Newton optimizer. Like classical SR1 it
builds an approximation $\tilde B$ of the **inverse Hessian** from rank-one terms and steps along
$d = \tilde B g$:

$$\tilde B_k = I + \sum_{i=1}^{L} v_i v_i^\top, \qquad x_k = x_{k-1} - \alpha_k \odot \tilde B_k\, g_{k-1}.$$

The vectors $v_i$ and the element-wise step sizes $\alpha_k = \gamma_1 e^{\gamma_2 \tilde\alpha_k}$ come from
small MLPs that look at each coordinate's $(x, p, d, g, q)$. Because every term is an outer product,
$\tilde B$ is always positive semi-definite (all eigenvalues $\ge 1$), so $d$ is always a descent direction —
unlike classical SR1, whose update can make the matrix indefinite and send the step uphill.

What keeps $\tilde B$ *curvature-consistent* is the **secant condition** $p = \tilde B q$ with
$p = x_k - x_{k-1}$ and $q = g_k - g_{k-1}$: during meta-training the penalty
$\lambda_{\text{sec}}\,\|p - \tilde B q\|^2$ is added to the objective values along the unrolled run.

**Two forms.** The formula above is the paper's form (models without `qn_` in their name), kept exactly for
reproduction. The app's default model (`qn_quadratic`) is the **scale-free form**:

$$H = \gamma I + \sum_i v_i v_i^\top + c\,(I - \Pi_Q), \qquad x_k = x_{k-1} - \alpha_k \odot H g_{k-1},$$

where $\gamma$ and $c$ come from measured curvature ($p^\top q / q^\top q$), so rescaling $f$ or $x$ changes
nothing; the untrained MLPs give $v_i = w_i/\sqrt{w_i^\top q_i}$ with $w_i = p_i - H'q_i$ — classical SR1, which
satisfies $H q_i = p_i$ exactly — and $\alpha = 1$; a pair whose $v_i$ would make $H$ indefinite enters as a BFGS
update instead (it keeps $H$ positive definite and, unlike a sum of $v v^\top$, can shrink it, which non-smooth
and non-convex functions need); the last term gives directions no pair has measured L-BFGS's step scale without
touching any secant equation ($\Pi_Q$ projects onto the stored $q_i$); and a step that does not lower $f$ enough
is shortened. Pick either form in the sidebar.

**Reading the app**
- *Trajectories*: several solvers on a 2-D function, step by step; click the contour to start elsewhere.
- *Curvature & secant*: how each direction compares with Newton's and how far each curvature model is from the
  secant equation; **Anatomy of one update** takes one step $B_k \to B_{k+1}$ apart, and **Why PSD matters**
  draws classical SR1's uphill step beside L-SR1's.
- *Benchmarks*: the paper's profiles and curves, a comparison bench for your own checkpoints, training curves.
- *Meta-training*: launch, watch, cancel and resume training runs that live in the background.
- *Human mesh recovery*: LGD, L-SR1, Adam, L-BFGS and the untrained qn form fitting a 3-D body to 2-D keypoints, step by step.
- The sidebar's **qn form: variants** draws a scale-free model's ablations beside it (without the BFGS fallback; with $H_0 = \gamma I$ too) — e.g. on Rosenbrock; its **L-SR1 step scale** multiplies every L-SR1 step; each solver keeps one colour on every page.
""")
