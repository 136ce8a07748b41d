"""The scale-free quasi-Newton form of L-SR1 (``LSR1Config.qn()``, form ``"qn"``).

The paper's form (Algorithm 1) steps x − γ1·exp(γ2·α̃) ⊙ B̃g with B̃ = I + Σ v vᵀ and raw features, so
its step lengths are tied to the scale it was trained at, γ1·g is a floor on every step, and a vector
generated coordinate by coordinate cannot express the SR1 update. This form keeps the paper's idea —
element-wise MLPs generate the rank-one vectors of a positive semi-definite operator and the step sizes,
a secant penalty keeps the operator curvature-consistent — and changes four things:

1. **Scale.** H = γI + Σ v vᵀ approximates the inverse Hessian. γ = ½·min pᵀq/qᵀq over the pairs in
   memory, the first of which is a curvature probe along −g made before the first step (one extra gradient,
   counted)
   (:func:`~lsr1_core.solvers.sr1.envelope_scale`). Every input of the MLPs is normalised per problem
   (x-space vectors by the RMS of the pair's step p, gradient-space vectors by their own RMS; inner
   products enter as cosines), and step sizes are α = exp(b·tanh(α̃/b)) around the unit quasi-Newton step
   (α̃ = 0 → α = 1). Multiplying f by c or rescaling x changes the iterates exactly as it changes those of
   classical quasi-Newton methods.
2. **SR1 is expressible.** For the newest pair (p, q) and H' (built from the older pairs), the generator
   sees r = p − H'q, H'q and the broadcast cosines and outputs a correction u; the new vector is
   w = r + rms(p)·u normalised by its own curvature along q: v = w / √(wᵀq). Then H q = H'q + w, so the
   secant residual is exactly rms(p)·‖u‖, and u = 0 is classical SR1 — which is what the untrained model
   does (its last layers are zero). The secant penalty measures how far the model departs from SR1.
3. **Limited memory like classical L-SR1.** The last L pairs and their corrections are stored and the
   vectors rebuilt from H₀ = γI each step (O(L²N), no extra network calls), so the secant condition holds
   for every stored pair when u = 0, and γ may change.
4. **PSD by construction and safe.** Where wᵀq ≤ ε‖w‖‖q‖ (SR1 would go indefinite or divide by ~0) the
   vector is not used; the learned correction decides whether a pair with rᵀq ≤ 0 becomes usable. With
   ``fallback="skip"`` such a pair is skipped, so H ⪰ γI ≻ 0. With ``fallback="bfgs"`` (the default of
   :meth:`LSR1Config.qn`) a pair with pᵀq > ε‖p‖‖q‖ enters H as a BFGS update instead, which keeps H ≻ 0 and
   satisfies H q = p for that pair: a sum of positive rank-ones can only *grow* H, so on non-convex or
   non-smooth objectives, where most pairs say H is too large along q, skipping leaves H too large and the
   safeguard shortens most steps (on mesh recovery's L1 objective 84 % of the pairs); the BFGS update shrinks
   H there, as L-BFGS does. The step α ⊙ Hg must pass an Armijo test or is replaced by Hg and/or shortened
   (:mod:`lsr1_core.learned.safeguard`), so f never increases and nothing blows up.
5. **Recovery** (``restart``, the default of :meth:`LSR1Config.qn`). Where no halving of the step passes, its
   memory held a curvature estimate far off the truth — e.g. a pair from a nearly linear stretch, pᵀq ≈ 10⁻¹⁴,
   whose BFGS update made H ≈ 10¹¹ along it, so that 30 halvings still overshoot. Without recovery the problem
   then stays where it is for good (the failed step stores a zero pair and γ keeps its last value). With it the
   search goes on by quadratic interpolation (2–1000× shorter per trial, up to 30 more trials), and the
   problem's stored pairs are forgotten: it restarts from the pair of the step that worked with γ = ‖p‖/‖g‖, or,
   where no trial passed, from a new curvature probe (one extra gradient, counted) — the classical remedy of
   quasi-Newton codes for a failed line search. Rows whose halvings succeed are untouched, so every result
   where the safeguard never ran out of halvings is unchanged.
6. **A diagonal metric** (``diag`` = β, 0 by default: off). H₀ = γ·D with D_i = (v_i / mean v)^(−β/2), where v is an
   exponential average of g_i² (Adam's second moment, decay ``diag_decay``). It is applied as a change of variables
   x = D^{1/2} y: every pair, gradient and feature is expressed in y (p/√D, q·√D, g·√D), the whole method runs
   there unchanged, and the direction is mapped back (√D ⊙ H_y(√D ⊙ g)), so H = D^{1/2} H_y D^{1/2} ≻ 0 and the
   secant condition H q = p holds exactly where H_y q_y = p_y does. D is a ratio of squared gradients, so it is
   invariant to f → c·f and to a uniform rescaling of x; it adapts to a per-coordinate rescaling, which is what
   it is for (β = 2 equalises a diagonal Hessian whose gradients scale like its diagonal's square root, e.g.
   logistic regression on badly scaled features). β is a family-level quantity for meta-training to learn
   (:mod:`lsr1_core.meta.scalars`); β = 0 gives exactly the iterates without it.
7. **Compact form where u = 0** (:mod:`lsr1_core.learned.compact`). At inference with a model whose output layers
   are zero (the untrained start and every shipped qn card) and whose stored corrections are zero, every vector
   of H lies in the span of the stored pairs, so H = a·I + Zᵀ M Z with Z the pairs and M small: the SR1/BFGS
   recursion of points 2–4 and the two-scale complement run on the Gram matrix ZZᵀ in float64 (O(l²) algebra
   after one O(lN) product), the newest pair's w = p − H'q is formed explicitly for its skip test and secant
   residual, and the step costs a few passes over the stored pairs instead of the O(l²N) rebuild. Same
   operator, same tests, different rounding (``compact.FORCE_EXPLICIT`` forces the explicit path); models with
   a non-zero correction, any gradient-enabled (meta-training) step, problems with fewer coordinates than stored
   vectors and steps whose stored vectors are too nearly dependent for the Gram form's rounding take the explicit
   path, unchanged.
8. **The L-BFGS update inside the form** (``update="bfgs"``, with ``h0="bb"`` and ``backtrack="wolfe"``:
   :meth:`~lsr1_core.learned.model.LSR1Config.qn_bfgs`). Every pair with curvature enters as a BFGS update over
   γI, γ from the newest pair, and the line search is strong Wolfe with the Armijo search behind it; the probe,
   restart, stopping rules, scale-freedom and the diagonal metric stay. At equal evaluations it needs fewer than the
   SR1 form on general problems (docs/design.md); no SR1 vector is built, so the learned parts are α and the family
   scalars. With zero output layers and no diagonal metric it runs :func:`bfgs_propose`, the two-loop recursion.
"""
from __future__ import annotations

import torch

import dataclasses

from ..operators import CurvatureOperator
from ..rowops import row_max_abs
from ..solvers.sr1 import envelope_scale, probe_scale, safe_norm, scale_from_curvatures
from . import compact, qn_one
from .pairs import compact_applies, heads_are_zero, pair_stats as _pair_stats, two_loop, two_loop_rows  # noqa: F401
from .pairs import two_loop_one as _two_loop_one  # noqa: F401  (importable from here as before)
from .model import LSR1Net, LSR1Operator, LSR1State
from .rules import MAX_HALVINGS, TRAIN_MAX_HALVINGS, LSR1StepOut, StepOut, UpdateRule, register
from .safeguard import EXTEND_TRIALS, armijo_step, wolfe_step


def _tiny(t: torch.Tensor) -> float:
    return torch.finfo(t.dtype).tiny


def _rms(t: torch.Tensor) -> torch.Tensor:
    return (t * t).mean(-1, keepdim=True).sqrt()


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    den = (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).clamp_min(_tiny(a))
    return _dot(a, b) / den


def psd_sr1_vector(p, q, Hq, u, eps: float, use: bool = True):
    """v = w/√(wᵀq) with w = p − Hq + rms(p)·u, or 0 where wᵀq ≤ ε‖w‖‖q‖ (B, N); and the skip mask (B,).
    ``use=False`` (``update="bfgs"``): no SR1 vector, every pair is skipped (and left to the BFGS fallback)."""
    w = p - Hq if u is None else p - Hq + _rms(p) * u
    wq = _dot(w, q)
    ok = (wq > eps * w.norm(dim=-1, keepdim=True) * q.norm(dim=-1, keepdim=True)) & (wq > 0) & torch.isfinite(wq)
    if not use:
        ok = torch.zeros_like(ok)
    v = torch.where(ok, w / wq.clamp_min(_tiny(wq)).sqrt(), torch.zeros_like(w))
    return v, ~ok.squeeze(-1)


def two_scale_complement(P: torch.Tensor, Q: torch.Tensor, gamma: torch.Tensor, rel_tol: float = 1e-10):
    """(U, c) of the two-scale initial matrix: H = γI + Σ v vᵀ + c·(I − UUᵀ).

    U (B, N, l) is an orthonormal basis of the stored gradient differences q_i (columns of a QR factorisation;
    a column whose R diagonal is below ``rel_tol``·max‖q_i‖ — a difference already in the span of the older
    ones, or the zeroed probe — is dropped) and c = max(γ_BB − γ, 0), γ_BB = pᵀq/qᵀq of the newest pair with
    positive curvature (the scale L-BFGS starts from). Then H q_i = p_i still holds for every pair SR1
    satisfied (c·(I − UUᵀ) q_i = 0), H ⪰ γI stays positive definite, and along directions the pairs have not
    measured H steps like L-BFGS's H₀ instead of the conservative γ that keeps SR1's updates positive.
    Scale-free: c scales like γ, U is invariant.
    """
    with torch.no_grad():
        P, Q = P.detach(), Q.detach()
        pq, qq = (P * Q).sum(-1), (Q * Q).sum(-1)
        ok = (pq > 0) & (qq > 0) & torch.isfinite(pq) & torch.isfinite(qq)
        bb = torch.where(ok, pq / qq.clamp_min(torch.finfo(Q.dtype).tiny), torch.zeros_like(pq))
        idx = torch.arange(Q.shape[1], device=Q.device).expand_as(ok)
        newest = torch.where(ok, idx, torch.full_like(idx, -1)).max(-1).values  # (B,), −1: none usable
        gbb = bb.gather(1, newest.clamp_min(0).unsqueeze(1))
        c = torch.where(newest.unsqueeze(1) >= 0, (gbb - gamma.detach()).clamp_min(0), torch.zeros_like(gbb))
        U, R = torch.linalg.qr(Q.transpose(1, 2))  # reduced: (B, N, l), (B, l, l)
        tol = rel_tol * qq.sqrt().amax(-1, keepdim=True)
        keep = torch.diagonal(R, dim1=1, dim2=2).abs() > tol
        U = U * keep.unsqueeze(1).to(U.dtype)
    return U, c


def bfgs_rho(P: torch.Tensor, Q: torch.Tensor, W: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, l): ρ = 1/pᵀq for the pairs whose SR1 vector was not used (W[:, i] = 0) and that have curvature
    pᵀq > ε‖p‖‖q‖, else 0 — the BFGS fallback's updates (so the BFGS update keeps H positive definite)."""
    with torch.no_grad():
        P, Q = P.detach(), Q.detach()
        rho = rho_where_curved((P * Q).sum(-1), safe_norm(P).squeeze(-1), safe_norm(Q).squeeze(-1), eps)
        return torch.where((W.detach() != 0).any(-1), torch.zeros_like(rho), rho)


def rho_where_curved(pq: torch.Tensor, p_norm: torch.Tensor, q_norm: torch.Tensor, eps: float) -> torch.Tensor:
    """ρ = 1/pᵀq where the pair has curvature pᵀq > ε‖p‖‖q‖ (and it is finite), else 0: the rule by which a pair
    enters H as a BFGS update (:func:`bfgs_rho`, :func:`bfgs_propose`)."""
    ok = (pq > eps * p_norm * q_norm) & (pq > 0) & torch.isfinite(pq)
    return torch.where(ok, 1 / pq.clamp_min(_tiny(pq)), torch.zeros_like(pq))


def qn_operator(cfg, W: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, gamma: torch.Tensor) -> LSR1Operator:
    """The qn form's H from its buffer W and stored pairs: γI + Σ v vᵀ (with the BFGS updates of the pairs SR1
    skipped when ``cfg.fallback`` is "bfgs"), plus the two-scale complement when ``cfg.h0`` asks for it."""
    complement = two_scale_complement(P, Q, gamma) if cfg.h0 == "two_scale" else None
    bfgs = (P.detach(), Q.detach(), bfgs_rho(P, Q, W, cfg.skip_eps)) if cfg.fallback == "bfgs" else None
    return LSR1Operator(W, scale=gamma, complement=complement, bfgs=bfgs)


def _partial(W, P, Q, rho, gamma) -> LSR1Operator:
    """H built from the first l pairs (no complement): plain γI + Σ v vᵀ when ``rho`` is None."""
    return LSR1Operator(W, scale=gamma, bfgs=None if rho is None else (P, Q, rho))


def rebuild(P, Q, U, gamma, eps: float, fallback: str = "skip", sr1: bool = True) -> torch.Tensor:
    """The buffer vectors (B, l, N) of H from stored pairs, oldest first (zero where a pair's SR1 vector is not
    used; with ``fallback="bfgs"`` such a pair enters H as a BFGS update, see :func:`bfgs_rho`).

    Keeps H_i q_j for every stored q_j and updates all of them as each pair's update is added, so the l levels
    cost l vectorised steps (O(l²N) arithmetic) instead of one recursion per pair."""
    if P.shape[1] == 0:
        return P[:, :0]
    M = gamma.unsqueeze(1) * Q  # (B, l, N): H_0 q_j
    V = []
    for i in range(P.shape[1]):
        p, q, Hq = P[:, i], Q[:, i], M[:, i]
        v = psd_sr1_vector(p, q, Hq, U[:, i], eps, sr1)[0]
        V.append(v)
        if i == P.shape[1] - 1:
            break
        M = M + (Q @ v.unsqueeze(-1)) * v.unsqueeze(1)  # H ← H + v vᵀ (zero where v is not used)
        if fallback == "bfgs":
            rho = bfgs_rho(p.unsqueeze(1), q.unsqueeze(1), v.unsqueeze(1), eps)  # (B, 1)
            if bool((rho > 0).any()):
                # H ← (I − ρ p qᵀ) H (I − ρ q pᵀ) + ρ p pᵀ, applied to every q_j at once
                a = Q @ p.unsqueeze(-1)  # (B, l, 1): pᵀq_j
                r = rho.unsqueeze(-1)
                Z = M - r * a * Hq.unsqueeze(1)
                Z = Z - r * (Z @ q.unsqueeze(-1)) * p.unsqueeze(1)
                M = Z + r * a * p.unsqueeze(1)
    return torch.stack(V, 1)


def qn_init_state(net: LSR1Net, objective, x0: torch.Tensor, f0: torch.Tensor | None = None,
                  g0: torch.Tensor | None = None) -> LSR1State:
    """The curvature probe (:func:`~lsr1_core.solvers.sr1.probe_scale`) gives γ and, where the config's
    ``probe_pair`` says so, the first pair."""
    if f0 is None or g0 is None:
        f0, g0 = objective.value_and_grad(x0)
    cfg = net.config
    p, q, gamma = probe_scale(objective, x0, g0, cfg.probe)
    if not cfg.probe_pair:  # the probe sets γ only: a zero pair, which every rule ignores
        p, q = torch.zeros_like(p), torch.zeros_like(q)
    empty = x0.new_zeros(x0.shape[0], 0, x0.shape[1])
    # With a diagonal metric the first step's γ is the probe pair's pᵀq/qᵀq in the metric's coordinates: the pair
    # is the newest in memory, so qn_propose's envelope computes it there (the probe's own γ is only the fallback
    # where the pair is unusable, and usability is the same in both coordinates: pᵀq and qᵀq > 0 do not change).
    S = update_second_moment(cfg, None, g0)
    return LSR1State(x=x0, f=f0, g=g0, p=p, d=g0, q=q, W=empty, Bq=gamma * q, k=0, gamma=cfg.gamma_factor * gamma,
                     pending_evals=1, P=empty, Q=empty, U=empty, S=S)


def qn_features(state: LSR1State, names, Hq: torch.Tensor, r: torch.Tensor, d0: torch.Tensor) -> torch.Tensor:
    """(B, N, F) per-problem-normalised inputs (see the module docstring)."""
    tiny = _tiny(state.x)
    lp = _rms(state.p).clamp_min(tiny)
    pool = {
        "p": lambda: state.p / lp,
        "Hq": lambda: Hq / lp,
        "r": lambda: r / lp,
        "g": lambda: state.g / _rms(state.g).clamp_min(tiny),
        "q": lambda: state.q / _rms(state.q).clamp_min(tiny),
        "d": lambda: d0 / _rms(d0).clamp_min(tiny),
        "x": lambda: state.x / _rms(state.x).clamp_min(tiny),
        "cos_rq": lambda: _cos(r, state.q),
        "rel_r": lambda: (_rms(r) / lp).clamp(max=10.0),
        "cos_pq": lambda: _cos(state.p, state.q),
        "cos_gd": lambda: _cos(state.g, d0),
    }
    B, N = state.x.shape
    return torch.stack([pool[name]().expand(B, N) for name in names], dim=-1)


DIAG_FLOOR = 1e-8  # v_i/mean v is clipped to [DIAG_FLOOR, 1/DIAG_FLOOR]: a coordinate whose gradient vanished
# (an unused parameter, a symmetry) gets a bounded, not an infinite, scale


def diag_scale(cfg, S: torch.Tensor | None) -> torch.Tensor | None:
    """√D (B, N) of the diagonal metric from the averaged squared gradients S, or None where it is off (β = 0).

    D_i = (S_i / mean S)^(−β/2) with the ratio clipped to [DIAG_FLOOR, 1/DIAG_FLOOR]; rows whose S is all zero or
    not finite get D = I."""
    if not cfg.diag or S is None:
        return None
    with torch.no_grad():
        S = S.detach()
        mean = S.mean(-1, keepdim=True)
        ok = (mean > 0) & torch.isfinite(mean)
        a = (S / mean.clamp_min(_tiny(S))).clamp(DIAG_FLOOR, 1 / DIAG_FLOOR)
        a = torch.where(ok & torch.isfinite(a), a, torch.ones_like(a))
        return a.pow(-cfg.diag / 4)


def update_second_moment(cfg, S: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor | None:
    """The exponential average of g² that the diagonal metric uses (None where it is off)."""
    if not cfg.diag:
        return None
    g2 = g.detach() ** 2
    g2 = torch.where(torch.isfinite(g2), g2, torch.zeros_like(g2))
    return g2 if S is None else cfg.diag_decay * S + (1 - cfg.diag_decay) * g2


class ScaledOperator(CurvatureOperator):
    """H = S H_y S with S = diag(s): the qn form's operator in x when it runs in the metric's coordinates y."""

    def __init__(self, inner: LSR1Operator, s: torch.Tensor):
        self.inner, self.s = inner, s
        self.dtype, self.device = inner.dtype, inner.device

    @property
    def shape(self):
        return self.inner.shape

    def matvec(self, u: torch.Tensor) -> torch.Tensor:
        return self.s * self.inner.matvec(self.s * u)

    def dense(self) -> torch.Tensor:
        return self.s.unsqueeze(2) * self.inner.dense() * self.s.unsqueeze(1)

    @property
    def W(self) -> torch.Tensor:
        """The rank-one vectors in x (B, l, N): S(γI + Σ v vᵀ)S = γS² + Σ (Sv)(Sv)ᵀ (what the Curvature page
        draws)."""
        return self.inner.W * self.s.unsqueeze(1)

    def detach(self):
        return ScaledOperator(self.inner.detach(), self.s.detach())


def state_operator(cfg, W, P, Q, gamma, S=None):
    """The operator a saved qn state describes (what :class:`LSR1Optimizer` rebuilds on load)."""
    s = diag_scale(cfg, S)
    if s is None:
        return qn_operator(cfg, W, P, Q, gamma)
    return ScaledOperator(qn_operator(cfg, W, P / s.unsqueeze(1), Q * s.unsqueeze(1), gamma), s)


def bfgs_propose(cfg, P, Q, p, q, g, gamma_prev, step_scale: float) -> dict | None:
    """:func:`qn_propose` for ``update="bfgs"`` with u = 0 (no gradient, zero output layers) and no diagonal metric:
    H is the L-BFGS inverse of the stored pairs (bfgs_rho's rule for which pairs enter) over γI, applied by the
    two-loop recursion — O(lN) per step, the work of torch.optim.LBFGS; no SR1 vector is built, so neither the
    rebuild nor the Gram matrix of the other paths is needed (the pairs' pᵀq, pᵀp, qᵀq are kept with the buffer).
    Returns None where a pair's statistics are not finite (an overflowing problem: the general path takes the
    step)."""
    B, N = g.shape
    base, s, m, _ = compact.append_pair(P, Q, p, q, None, cfg.memory)
    st = _pair_stats(base, s, m)
    if not bool(torch.isfinite(st).all()):
        return None
    pq, pp, qq = st.unbind(-1)
    rho64 = rho_where_curved(pq, pp.clamp_min(0).sqrt(), qq.clamp_min(0).sqrt(), cfg.skip_eps)
    # γ: H₀'s scale as the config says (the envelope or the newest pair with positive curvature)
    gamma64 = scale_from_curvatures(pq, qq, gamma_prev.double(), cfg.gamma_factor, newest=cfg.h0 == "bb")
    dtype = g.dtype
    gamma, rho = gamma64.to(dtype), rho64.to(dtype)
    P_all, Q_all = base[:, s:s + m, 0], base[:, s:s + m, 1]
    d = two_loop(P_all, Q_all, rho, gamma, g, m)
    took = rho[:, m - 1] > 0
    # H'q (the operator before the newest pair, what the state keeps as Bq) is only needed for the secant residual
    # of a pair that did not enter (H q = p exactly where it did): computed then, else on first read
    if bool(took.all()):
        Hq = compact.LazyTensor(tuple(g.shape), dtype, g.device, lambda: two_loop(P_all, Q_all, rho, gamma, q, m - 1))
        secant = g.new_zeros(B)
    else:
        Hq = two_loop(P_all, Q_all, rho, gamma, q, m - 1)
        resid = torch.where(took.unsqueeze(-1), torch.zeros_like(p), p - Hq)
        secant = (resid * resid).sum(-1)
    psq = st[:, m - 1, 1].to(dtype)
    rel_sq = torch.where(psq > 0, secant / psq.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(secant))
    # exp(b·tanh(0/b))·step_scale: the untrained α, the same for every coordinate (one element, expanded)
    alpha = g.new_full((), step_scale).expand(B, N)
    W = compact.zeros_expanded(g, B, m, N)
    op = LSR1Operator(W, scale=gamma, bfgs=(P_all, Q_all, rho))
    return {"v": compact.zeros_expanded(g, B, N), "alpha": alpha, "d": d, "W": W, "op": op, "secant": secant, "rel_sq": rel_sq,
            "departure": g.new_zeros(B), "skipped": torch.ones(B, dtype=torch.bool, device=g.device), "bfgs": took,
            "Hq": Hq, "gamma": gamma, "P": P_all, "Q": Q_all, "U": compact.zeros_expanded(g, B, m, N)}


def qn_propose(net: LSR1Net, state: LSR1State, step_scale: float = 1.0) -> dict:
    """Add the newest pair to the memory, generate its vector and the learned step α ⊙ Hg (unsafeguarded)."""
    cfg = net.config
    # The pair is data, not a path for the meta-gradient: it flows through the generated u and α only
    # (through the pairs it compounds over the unroll and explodes).
    p, q, g = state.p.detach(), state.q.detach(), state.g
    old = max(cfg.memory - 1, 0)
    P, Q, U = (t[:, t.shape[1] - min(old, t.shape[1]):] for t in (state.P, state.Q, state.U))
    sc = diag_scale(cfg, state.S)
    if compact_applies(net, U):
        # u = 0 for every stored pair and the new one: the two-loop recursion (update="bfgs", point 8), else the
        # operator in Gram form (point 7); each returns None for a step it leaves to the next
        out = bfgs_propose(cfg, P, Q, p, q, g.detach(), state.gamma.detach(), step_scale) if (
            cfg.update == "bfgs" and sc is None) else None
        if out is None:
            out = compact.propose(cfg, P, Q, p, q, g.detach(), state.gamma.detach(), sc, step_scale,
                                  two_scale_complement)
            if out is not None and sc is not None:
                out["op"] = ScaledOperator(out["op"], sc)
        if out is not None:
            return out
    P_x, Q_x, p_x, q_x = P, Q, p, q  # the pairs are stored in x; with a diagonal metric the method runs in y
    if sc is not None:
        P, Q = P / sc.unsqueeze(1), Q * sc.unsqueeze(1)
        p, q, g = p / sc, q * sc, g * sc
        state = dataclasses.replace(state, x=state.x / sc, p=p, q=q, g=g)
    gamma = envelope_scale(torch.cat([P, p.unsqueeze(1)], 1), torch.cat([Q, q.unsqueeze(1)], 1), state.gamma,
                           cfg.gamma_factor, newest=cfg.h0 == "bb")
    if sc is None and P.shape[1] == state.W.shape[1] and bool((gamma == state.gamma).all()) and not isinstance(
            state.W, compact.LazyTensor):  # (a compact step's W is rebuilt: it is not the explicit recursion's)
        W_old = state.W  # nothing dropped and H₀ unchanged: the stored vectors are still exact
    else:
        W_old = rebuild(P, Q, U, gamma, cfg.skip_eps, cfg.fallback, cfg.update == "sr1")
    rho_old = bfgs_rho(P, Q, W_old, cfg.skip_eps) if cfg.fallback == "bfgs" else None
    prev = _partial(W_old, P, Q, rho_old, gamma)
    Hq = prev.matvec(q)
    r = p - Hq
    if heads_are_zero(net) and not torch.is_grad_enabled():
        # the untrained start (or any model whose output layers are exactly zero): u = 0 and α = 1 whatever the
        # features, so neither the features nor the per-coordinate networks are computed (same numbers, O(N) work)
        u = a = torch.zeros_like(g)
    else:
        d0 = prev.matvec(g)
        feats = qn_features(state, cfg.features, Hq, r, d0)
        if cfg.detach_features:
            feats = feats.detach()
        u, a = net.raw(feats)
    v, skipped = psd_sr1_vector(p, q, Hq, u, cfg.skip_eps, cfg.update == "sr1")
    W = torch.cat([W_old, v.unsqueeze(1)], dim=1)
    P_all, Q_all = torch.cat([P, p.unsqueeze(1)], 1), torch.cat([Q, q.unsqueeze(1)], 1)
    op = qn_operator(cfg, W, P_all, Q_all, gamma)
    d = op.matvec(g)
    if sc is not None:
        d = sc * d
    b = cfg.step_bound
    alpha = torch.exp(b * torch.tanh(a / b)) * step_scale
    # Secant residual of the new operator on the pair it was built from (the textbook H_{k+1} q_k = p_k);
    # where the vector is used it equals rms(p)·‖u‖, so the penalty is the learned departure from SR1. A BFGS
    # update satisfies H_{k+1} q_k = p_k exactly.
    resid = r - v * _dot(v, q)
    took_bfgs = torch.zeros_like(skipped).unsqueeze(-1)
    if cfg.fallback == "bfgs":
        took_bfgs = (op.bfgs[2][:, -1] > 0).unsqueeze(-1)
        resid = torch.where(took_bfgs, torch.zeros_like(resid), resid)
    if sc is not None:  # H q = p in x ⇔ H_y q_y = p_y in y; the residual measured in x
        resid, p = sc * resid, p_x
    psq = _dot(p, p).squeeze(-1)
    secant = (resid * resid).sum(-1)
    rel_sq = torch.where(psq > 0, secant / psq.clamp_min(_tiny(psq)), torch.zeros_like(secant))
    departure = (u * u).mean(-1)
    if sc is not None:
        op = ScaledOperator(op, sc)
        P_all, Q_all = torch.cat([P_x, p_x.unsqueeze(1)], 1), torch.cat([Q_x, q_x.unsqueeze(1)], 1)
    return {"v": v, "alpha": alpha, "d": d, "W": W, "op": op, "secant": secant, "rel_sq": rel_sq,
            "departure": departure, "skipped": skipped, "bfgs": took_bfgs.squeeze(-1), "Hq": Hq, "gamma": gamma,
            "P": P_all, "Q": Q_all,
            "U": torch.cat([U, u.unsqueeze(1)], 1)}


@register
class QNRule(UpdateRule):
    """The scale-free quasi-Newton form (this module's docstring) behind :class:`~lsr1_core.learned.rules.UpdateRule`.

    A step: :func:`qn_propose`, the Armijo safeguard (at most ``TRAIN_MAX_HALVINGS`` halvings in the training
    step, ``MAX_HALVINGS`` at inference; the recovery's extended search and the lengthening as the config asks),
    the new pair, the diagonal metric's second moment and, where the safeguard found no use in the step, a restart.
    """

    name = "qn"
    scale_free = True
    options = ("h0", "fallback", "restart", "extrapolate", "backtrack", "update", "gamma_factor", "probe_pair")
    state_fields = UpdateRule.state_fields + ("gamma", "P", "Q", "U")

    def init(self, net, objective, x0, f0=None, g0=None) -> LSR1State:
        return qn_init_state(net, objective, x0, f0, g0)

    def init_heads(self, net: LSR1Net) -> None:
        # Start exactly at classical SR1 with unit quasi-Newton steps: zero correction, α = 1.
        for head in (net.vector_generator.fc2, net.lr_generator.fc2):
            head.weight.zero_()
            head.bias.zero_()

    def operator(self, net, state):
        return state_operator(net.config, state.W, state.P, state.Q, state.gamma, state.S)

    def step(self, net, state, objective, *, differentiable: bool, detach_gradient: bool = False,
             step_scale: float = 1.0) -> tuple[LSR1State, StepOut]:
        halvings = TRAIN_MAX_HALVINGS if differentiable else MAX_HALVINGS
        return self._step(net, state, objective, detach_gradient, step_scale, halvings)

    @staticmethod
    def _step(net, state, objective, detach_gradient, step_scale, max_halvings) -> tuple[LSR1State, StepOut]:
        cfg = net.config
        if qn_one.applies(net, state):  # one row of qn_bfgs: the same step with its bookkeeping in scalars
            done = qn_one.bfgs_step_one(net, state, objective, step_scale, max_halvings)
            if done is not None:
                new, out, restart = done
                if restart is not None:
                    new, extra = restart_rows(cfg, new, objective, *restart, state.g)
                    out.evals += extra
                return new, out
        prop = qn_propose(net, state, step_scale)
        d, alpha = prop["d"], prop["alpha"]
        x, f, g = state.x, state.f, state.g
        if cfg.safeguard == "armijo":
            extend = EXTEND_TRIALS if cfg.restart else 0
            s = _times(alpha, d)
            if cfg.backtrack == "wolfe":
                safe = wolfe_step(objective, x, f, g, s, d, max_halvings=max_halvings, extend=extend)
            else:
                safe = armijo_step(objective, x, f, g, s, d, max_halvings=max_halvings, extend=extend,
                                   grow=cfg.extrapolate, backtrack=cfg.backtrack)
            x_new, f_new, g_new, evals, fired = safe.x, safe.f, safe.g, safe.evals, safe.fired
            step_size = safe.step_size(alpha)
        else:
            x_new = x - alpha * d
            f_new, g_new = objective.value_and_grad(x_new)
            evals, step_size = 1, alpha
            fired = torch.zeros_like(f, dtype=torch.bool)
        if detach_gradient:
            g_new = g_new.detach()
        evals += state.pending_evals
        new = LSR1State(x=x_new, f=f_new, g=g_new, p=x_new - x, d=d, q=g_new - g, W=prop["W"], Bq=prop["Hq"],
                        k=state.k + 1, gamma=prop["gamma"], P=prop["P"], Q=prop["Q"], U=prop["U"],
                        S=update_second_moment(cfg, state.S, g_new))
        restarted = torch.zeros_like(fired)
        if cfg.restart and cfg.safeguard == "armijo":
            # rows that did not move although their gradient is not zero (no trial passed, or the accepted one
            # rounds back to x): their memory gave a step of no use, so they restart from a probe
            failed = (safe.t == 0) | safe.null
            if bool(failed.any()):
                failed = failed & (row_max_abs(g.detach()) > 0)
            restarted = failed | safe.extended
            if bool(restarted.any()):
                new, extra = restart_rows(cfg, new, objective, failed, safe.extended, g)
                evals += extra
        rel = prop["rel_sq"].detach().clamp_min(0).sqrt()
        lengthened = safe.grown if cfg.safeguard == "armijo" else torch.zeros_like(fired)
        return new, StepOut(direction=d, step_size=step_size, operator=prop["op"], evals=evals, vector=prop["v"],
                            secant=prop["secant"], secant_rel=rel, learned_step=alpha, secant_rel_sq=prop["rel_sq"],
                            departure=prop["departure"], safeguard=fired, skipped=prop["skipped"],
                            restarted=restarted, bfgs=prop["bfgs"], lengthened=lengthened)


def _times(alpha: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """α ⊙ d; d itself where α is one expanded 1 (the untrained step: no pass over d)."""
    if alpha.shape == d.shape and all(st == 0 for st in alpha.stride()) and not alpha.requires_grad and bool(
            alpha.reshape(-1)[:1].eq(1).all()):
        return d
    return alpha * d


def qn_step(net: LSR1Net, state: LSR1State, objective, *, detach_gradient: bool = False,
            step_scale: float = 1.0, max_halvings: int = MAX_HALVINGS) -> tuple[LSR1State, LSR1StepOut]:
    """One step of the qn form: propose, safeguard, evaluate, advance (differentiable). The older entry point of
    :meth:`QNRule.step` (``extras`` holds what the :class:`StepOut` names: evals, safeguard, skipped, …)."""
    new, out = QNRule._step(net, state, objective, detach_gradient, step_scale, max_halvings)
    return new, out.legacy()


def restart_rows(cfg, state: LSR1State, objective, failed: torch.Tensor, extended: torch.Tensor,
                 g_old: torch.Tensor) -> tuple[LSR1State, int]:
    """Forget the stored pairs of the rows the safeguard struggled with (``failed`` | ``extended``, (B,) bool).

    A row whose step was accepted only by the extended search keeps that step's pair as its newest and restarts
    from γ = ‖p‖/‖g‖, the scale of the step that worked (the inverse Hessian's units, so scale-free); a row where
    no trial passed starts again from a curvature probe at its point (:func:`~lsr1_core.solvers.sr1.probe_scale`,
    one batched gradient, counted), as at the first step. Zero pairs are ignored by every rule (envelope, SR1
    skip, BFGS ρ, the two-scale complement), so zeroing a row's memory is forgetting it. Returns the new state and
    the evaluations used."""
    rows = failed | extended
    p, q, gamma, evals = state.p, state.q, state.gamma, 0
    with torch.no_grad():
        tiny = _tiny(state.x)
        taken = state.p.detach().norm(dim=-1, keepdim=True) / g_old.detach().norm(dim=-1, keepdim=True).clamp_min(tiny)
        gamma = torch.where(extended.view(-1, 1) & (taken > 0) & torch.isfinite(taken), taken, gamma)
        if bool(failed.any()):
            pp, qq, gp = probe_scale(objective, state.x.detach(), state.g.detach(), cfg.probe)
            evals = 1
            f1 = failed.view(-1, 1)
            if not cfg.probe_pair:  # (as at the first step: the probe sets γ only)
                pp, qq = torch.zeros_like(pp), torch.zeros_like(qq)
            p, q = torch.where(f1, pp, p), torch.where(f1, qq, q)
            gamma = torch.where(f1, cfg.gamma_factor * gp, gamma)
    r2 = rows.view(-1, 1, 1)

    def forget(t):
        return torch.where(r2, torch.zeros_like(t), t) if t is not None and t.shape[1] else t

    new = LSR1State(x=state.x, f=state.f, g=state.g, p=p, d=state.d, q=q, W=forget(state.W), Bq=state.Bq,
                    k=state.k, gamma=gamma, P=forget(state.P), Q=forget(state.Q), U=forget(state.U), S=state.S)
    return new, evals
