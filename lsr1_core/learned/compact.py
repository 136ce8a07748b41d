"""The qn form's operator in compact (Gram-matrix) form, for models whose learned correction is zero.

Where the generator's output is exactly zero (u = 0: the untrained start and every shipped qn card, whose output
layers are zero, at inference), every vector the qn form's update builds lies in the span of its stored pairs:
the SR1 vector of pair i is w_i = p_i − H_i q_i, a BFGS update adds p_i and H_i q_i, and the two-scale complement
c·(I − Π_Q) projects onto span{q_j}. So with Z = [p_0; q_0; p_1; q_1; …] (2m × N, the pairs interleaved, newest
last)

    H = γI + [SR1 and BFGS updates in order] + c·(I − Π_Q) = a·I + Zᵀ M Z

with a = γ + c and a small symmetric M (2m × 2m). The recursion of :func:`~lsr1_core.learned.qn.rebuild` runs on
the coefficients, in float64 whatever the data's dtype, from the Gram matrix K = Z Zᵀ (one matrix product per
step, which also gives Z g): pair i's H_i q_i has coefficients h = γ e_q + M K e_q, its SR1 vector w = e_p − h, so
wᵀq = wᵀK e_q and ‖w‖² = wᵀK w, with the same skip test (wᵀq > ε‖w‖‖q‖), BFGS rule (:func:`bfgs_rho`'s) and
updates M ← M + w wᵀ/wᵀq, or M ← M − ρ(e_p hᵀ + h e_pᵀ) + (ρ² qᵀHq + ρ) e_p e_pᵀ. The envelope's γ and the
complement's c come from K's diagonal. A step then costs two passes over the stored pairs (the Gram product and
one product Zᵀ C for H'q and Hg) and a few O(N) vector operations, against the explicit form's O(l²N) rebuild.

* **The newest pair** is what the step's skip test and secant residual report on, and ‖w‖² = wᵀKw loses
  half its digits to cancellation where w is small. So its w = p − H'q is formed explicitly (H'q = Zᵀh, one
  product) and tested as :func:`~lsr1_core.learned.qn.psd_sr1_vector` does; the returned vector v = w/√(wᵀq) is
  that vector. The older pairs' tests use the Gram algebra (in float64: exact to rounding; in float32 the Gram's
  entries carry ~10⁻⁶ relative error at N = 10⁶, so a test within that of its threshold can go either way — as
  the explicit float32 test already does where w is at rounding level).
* **The complement's projector** Π_Q = Qᵀ G⁻¹ Q (G = Q Qᵀ, Cholesky in float64). The explicit form takes an
  orthonormal basis from a QR factorisation of Q and drops the columns whose R diagonal is below
  10⁻¹⁰·max‖q_i‖; R_jj² is exactly the j-th pivot of the unpivoted Cholesky factorisation of G, so the rule is the
  same — but from a Gram matrix a pivot far below the Gram's own rounding cannot be told from zero, and the QR's
  treatment of a dropped column is not a projector onto span{q_j} (e.g. zero pairs at the front of the memory,
  after a restart or an unusable probe, make it drop the first coordinates instead). So the Gram projector is
  used only where every column is *certified*: all ‖q_j‖ > 0, N ≥ m, and every pivot of the normalised Gram
  (sin² of q_j's angle to the span of the earlier ones) above ``CERTIFY`` (10⁻⁸ in float64, 10⁻² in float32), and
  R_jj above 10× the drop threshold. Elsewhere (any row of the batch) the step calls the explicit
  :func:`~lsr1_core.learned.qn.two_scale_complement` — an O(m²N) QR, only in those steps — so the operator is the
  explicit form's in every case, to rounding.
* **State.** The pairs are kept in a buffer that grows by one slot per step (P and Q are views of it, written
  once: a slot is never rewritten while a view can see it, so states and operators kept from earlier steps stay
  valid); a full buffer is copied into a new one every ``memory`` steps. The buffer ``W`` of rank-one vectors is
  returned lazily (:class:`LazyTensor`: computed by one product the first time anything reads it, e.g. a
  restart, a saved state or the Curvature page), the corrections ``U`` as an expanded zero tensor.

``FORCE_EXPLICIT = True`` (module flag) makes :func:`~lsr1_core.learned.qn.qn_propose` take the explicit path for
every model (tests and ``experiments.optimizer_cost`` compare the two).
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_map

from ..operators import CurvatureOperator

FORCE_EXPLICIT = False  # True: every model takes the explicit path (for comparisons)
REL_TOL = 1e-10  # two_scale_complement's drop rule: R_jj ≤ REL_TOL·max‖q_i‖
CERTIFY = {torch.float64: 1e-8, torch.float32: 1e-2}  # minimum normalised Cholesky pivot for the Gram projector
CERTIFY_DEFAULT = 1e-2


class LazyTensor(torch.Tensor):
    """A tensor whose values are computed the first time anything reads them (``thunk()``); its shape, dtype and
    device are known without computing it. Every torch operation on it sees the computed tensor and returns plain
    tensors; pickling (torch.save) and deepcopy store the computed values."""

    @staticmethod
    def __new__(cls, shape, dtype, device, thunk):
        r = torch.Tensor._make_wrapper_subclass(cls, shape, dtype=dtype, device=device, requires_grad=False)
        r._thunk = thunk
        r._value = None
        return r

    def __init__(self, *args, **kwargs):
        pass

    def value(self) -> torch.Tensor:
        if self._value is None:
            self._value = self._thunk()
            self._thunk = None
        return self._value

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        def plain(t):
            return t.value() if isinstance(t, LazyTensor) else t
        return func(*tree_map(plain, args), **tree_map(plain, kwargs or {}))

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, proto):
        return self.value().__reduce_ex__(proto)

    def __deepcopy__(self, memo):
        return self.value().clone()

    def __repr__(self):
        return repr(self.value())


def plain(t):
    """t itself, or the computed tensor of a :class:`LazyTensor`."""
    return t.value() if isinstance(t, LazyTensor) else t


def zeros_expanded(like: torch.Tensor, *shape) -> torch.Tensor:
    """Zeros of ``shape`` that hold one element (an expanded scalar)."""
    return like.new_zeros(()).expand(*shape)


def is_zero(t: torch.Tensor | None) -> bool:
    """True where t is None, empty or all zero (an expanded zero is checked on one element)."""
    if t is None or t.numel() == 0:
        return True
    t = plain(t)
    if all(s == 0 for s in t.stride()):
        return not bool(t.reshape(-1)[:1].any())
    return not bool(t.any())


# --- the pair buffer -------------------------------------------------------------------------------------------
def _buffer_of(P: torch.Tensor, Q: torch.Tensor):
    """(base, s) where P, Q are base[:, s:s+m, 0], base[:, s:s+m, 1] of a pair buffer, else None."""
    base = P._base
    if base is None or Q._base is not base or getattr(base, "_lsr1_hwm", None) is None:
        return None
    B, cap, two, N = base.shape
    if P.shape != (B, P.shape[1], N) or Q.shape != P.shape or P.dtype != base.dtype:
        return None
    want = (cap * 2 * N, 2 * N, 1)
    if P.stride() != want or Q.stride() != want or Q.storage_offset() != P.storage_offset() + N:
        return None
    off = P.storage_offset() - base.storage_offset()
    if off % (2 * N):
        return None
    return base, off // (2 * N)


def append_pair(P: torch.Tensor, Q: torch.Tensor, p: torch.Tensor, q: torch.Tensor, g: torch.Tensor, memory: int):
    """Store the newest pair after the stored ones and g after it: returns (base, s, m) with the m pairs in
    base[:, s:s+m] (interleaved p, q rows) and g in base[:, s+m, 0] (a scratch row no view sees). Writes into the
    same buffer where P, Q are its newest slots and the next slots are free; otherwise copies into a new one."""
    B, N = p.shape
    m_old = P.shape[1]
    found = _buffer_of(P, Q) if m_old else None
    if found is not None:
        base, s = found
        j = s + m_old
        if base._lsr1_hwm == j and j + 1 < base.shape[1] and base.device == p.device and base.dtype == p.dtype:
            base[:, j, 0].copy_(p)
            base[:, j, 1].copy_(q)
            base[:, j + 1, 0].copy_(g)
            base._lsr1_hwm = j + 1
            return base, s, m_old + 1
    cap = max(memory, m_old + 1) + max(memory, 1) + 1
    base = p.new_empty(B, cap, 2, N)
    if m_old:
        base[:, :m_old, 0].copy_(P)
        base[:, :m_old, 1].copy_(Q)
    base[:, m_old, 0].copy_(p)
    base[:, m_old, 1].copy_(q)
    base[:, m_old + 1, 0].copy_(g)
    base._lsr1_hwm = m_old + 1
    return base, 0, m_old + 1


# --- the coefficient algebra (float64) -------------------------------------------------------------------------
def _unit(B, n, i, like):
    e = like.new_zeros(B, n)
    e[:, i] = 1
    return e


def envelope(K: torch.Tensor, gamma_prev: torch.Tensor, factor: float, tiny: float,
             newest: bool = False) -> torch.Tensor:
    """:func:`~lsr1_core.solvers.sr1.envelope_scale` from the Gram matrix (B, 2m, 2m): factor·min pᵢᵀqᵢ/qᵢᵀqᵢ over
    the pairs with positive curvature, the previous γ (B, 1) where there is none. float64 (B, 1)."""
    m = K.shape[1] // 2
    if m == 0:
        return gamma_prev.double()
    ip = torch.arange(m, device=K.device) * 2
    pq, qq = K[:, ip, ip + 1], K[:, ip + 1, ip + 1]
    bb = factor * pq / qq.clamp_min(tiny)
    use = (pq > 0) & (qq > 0) & torch.isfinite(bb)
    if newest:  # h0 = "bb": the newest pair with positive curvature (envelope_scale's newest=True)
        idx = torch.arange(m, device=K.device).expand_as(use)
        last = torch.where(use, idx, torch.full_like(idx, -1)).max(-1, keepdim=True).values
        return torch.where(last >= 0, bb.gather(1, last.clamp_min(0)), gamma_prev.double())
    low = torch.where(use, bb, torch.full_like(bb, float("inf"))).min(-1, keepdim=True).values
    return torch.where(torch.isfinite(low), low, gamma_prev.double())


def add_pair(M, K, i, gamma, eps: float, fallback: str, tiny: float, w_test=None, sr1: bool = True):
    """Add pair i's update to H = γI + ZᵀMZ in coefficient space (M (B, n, n) float64, returned new).

    Returns (M, ok, rho, cv): ok (B,) the SR1 vector is used, rho (B,) the BFGS update's 1/pᵀq (0 where none), cv
    (B, n) the coefficients of v = w/√(wᵀq) (0 where not used). ``w_test`` = (wq, ‖w‖, ‖q‖) computed elsewhere
    (the explicit newest vector) replaces the Gram's values in the skip test."""
    B, n = K.shape[:2]
    ip, iq = 2 * i, 2 * i + 1
    kq = K[:, :, iq]
    h = (M @ kq.unsqueeze(-1)).squeeze(-1)
    h[:, iq] += gamma.squeeze(-1)
    cw = -h
    cw[:, ip] += 1
    if w_test is None:
        wq = (cw * kq).sum(-1)
        wn = ((cw.unsqueeze(1) @ K).squeeze(1) * cw).sum(-1).clamp_min(0).sqrt()
        qn = K[:, iq, iq].clamp_min(0).sqrt()
    else:
        wq, wn, qn = w_test
    ok = (wq > eps * wn * qn) & (wq > 0) & torch.isfinite(wq)
    if not sr1:  # update = "bfgs": no SR1 vector
        ok = torch.zeros_like(ok)
    wq_safe = torch.where(ok, wq, torch.ones_like(wq))
    cw = torch.where(ok.unsqueeze(-1), cw, torch.zeros_like(cw))
    M = M + cw.unsqueeze(-1) * cw.unsqueeze(-2) / wq_safe.view(B, 1, 1)
    cv = cw / wq_safe.sqrt().unsqueeze(-1)
    rho = torch.zeros_like(wq)
    if fallback == "bfgs":
        pq, pp, qq = K[:, ip, iq], K[:, ip, ip], K[:, iq, iq]
        use = ~ok & (pq > eps * pp.clamp_min(0).sqrt() * qq.clamp_min(0).sqrt()) & (pq > 0) & torch.isfinite(pq)
        if bool(use.any()):
            rho = torch.where(use, 1 / pq.clamp_min(tiny), torch.zeros_like(pq))
            qhq = (kq * h).sum(-1)
            top = torch.where(use, rho * rho * qhq + rho, torch.zeros_like(rho))
            rh = torch.where(use.unsqueeze(-1), rho.unsqueeze(-1) * h, torch.zeros_like(h))
            M = M.clone()
            M[:, ip, :] -= rh
            M[:, :, ip] -= rh
            M[:, ip, ip] += top
    return M, ok, rho, cv


def complement(K: torch.Tensor, gamma: torch.Tensor, N: int, tiny: float, certify: float):
    """The two-scale complement from the Gram matrix: (c (B, 1), Ginv (B, m, m) with Π_Q = Qᵀ Ginv Q, certified)
    in float64. ``certified`` is False where the Gram projector may differ from the explicit QR's beyond rounding
    (module docstring); Ginv is then None."""
    m = K.shape[1] // 2
    ip = torch.arange(m, device=K.device) * 2
    pq, qq = K[:, ip, ip + 1], K[:, ip + 1, ip + 1]
    ok = (pq > 0) & (qq > 0) & torch.isfinite(pq) & torch.isfinite(qq)
    bb = torch.where(ok, pq / qq.clamp_min(tiny), torch.zeros_like(pq))
    idx = torch.arange(m, device=K.device).expand_as(ok)
    newest = torch.where(ok, idx, torch.full_like(idx, -1)).max(-1).values
    gbb = bb.gather(1, newest.clamp_min(0).unsqueeze(1))
    c = torch.where(newest.unsqueeze(1) >= 0, (gbb - gamma).clamp_min(0), torch.zeros_like(gbb))
    if not bool((c > 0).any()):
        return c, None, True  # no complement in any row: nothing to project
    if N < m or not bool(torch.isfinite(qq).all()):
        return c, None, False
    D = qq.sqrt()
    if not bool((D > 0).all()):
        return c, None, False
    G = K[:, ip + 1][:, :, ip + 1]
    C = G / (D.unsqueeze(-1) * D.unsqueeze(-2))
    L, info = torch.linalg.cholesky_ex(C)
    if bool((info != 0).any()):
        return c, None, False
    piv = torch.diagonal(L, dim1=1, dim2=2) ** 2
    R = D * piv.sqrt()
    if bool((piv <= certify).any()) or bool((R <= 10 * REL_TOL * D.amax(-1, keepdim=True)).any()):
        return c, None, False
    Ci = torch.cholesky_inverse(L)
    return c, Ci / (D.unsqueeze(-1) * D.unsqueeze(-2)), True


class CompactOperator(CurvatureOperator):
    """H = a·I + Zᵀ M Z (+ c·(I − UUᵀ) where the explicit complement was used): the qn form's operator from its
    stored pairs (module docstring). Z (B, 2m, N) the pairs interleaved, M (B, 2m, 2m) float64, a (B, 1) float64.

    Attributes the explicit :class:`~lsr1_core.learned.model.LSR1Operator` has and code reads: ``scale`` (γ),
    ``bfgs`` ((P, Q, ρ) or None), ``complement`` ((U, c) or None; U from the explicit QR, computed on first use),
    ``W`` (the rank-one vectors (B, m, N), computed on first use)."""

    def __init__(self, Z, M, a, gamma, *, Cv, v_last, rho=None, c=None, U=None, two_scale=False,
                 explicit_complement=None):
        self.Z, self.M, self.a, self.scale = Z, M, a, gamma
        self._Cv, self._v_last, self._rho = Cv, v_last, rho
        self._c, self._U, self._explicit = c, U, U is not None
        self._two_scale, self._explicit_complement = two_scale, explicit_complement
        self._W = None
        self.dtype, self.device = Z.dtype, Z.device

    @property
    def shape(self):
        return (self.Z.shape[0], self.Z.shape[2])

    @property
    def P(self):
        return self.Z[:, 0::2]

    @property
    def Q(self):
        return self.Z[:, 1::2]

    @property
    def bfgs(self):
        return None if self._rho is None else (self.P, self.Q, self._rho)

    @property
    def complement(self):
        if not self._two_scale:
            return None
        if self._U is None:
            self._U = self._explicit_complement(self.P, self.Q, self.scale)[0]
        return self._U, self._c.to(self.dtype)

    @property
    def W(self) -> torch.Tensor:
        if self._W is None:
            old = self._Cv.to(self.dtype) @ self.Z
            self._W = torch.cat([old, self._v_last.unsqueeze(1)], 1)
        return self._W

    def matvec(self, u: torch.Tensor) -> torch.Tensor:
        coef = (self.M @ (self.Z @ u.unsqueeze(-1)).double()).to(self.dtype)
        out = torch.baddbmm(u.unsqueeze(-1) * self.a.to(self.dtype).unsqueeze(-1), self.Z.transpose(1, 2), coef)
        out = out.squeeze(-1)
        if self._explicit:
            U, c = self._U, self._c.to(self.dtype)
            out = out + c * (u - torch.einsum("bnl,bl->bn", U, torch.einsum("bnl,bn->bl", U, u)))
        return out

    def dense(self) -> torch.Tensor:
        B, N = self.shape
        eye = torch.eye(N, dtype=self.dtype, device=self.device)
        out = self.a.to(self.dtype).view(B, 1, 1) * eye + self.Z.transpose(1, 2) @ self.M.to(self.dtype) @ self.Z
        if self._explicit:
            U, c = self._U, self._c.to(self.dtype)
            out = out + c.view(B, 1, 1) * (eye - U @ U.transpose(1, 2))
        return out

    def detach(self):
        return self


def with_complement(Z, K, M, g64, gamma, two_scale: bool, tiny: float, explicit_complement):
    """The two-scale complement added to H = γI + ZᵀMZ: returns (M, a, kwargs of :class:`CompactOperator`, Ginv
    (B, m, m) or None where the Gram projector is not used, c (B, 1) float64 or None)."""
    B, n, N = Z.shape
    m = n // 2
    kw = dict(two_scale=two_scale, explicit_complement=explicit_complement)
    if not two_scale:
        return M, g64, kw, None, None
    c, Ginv, certified = complement(K, g64, N, tiny, CERTIFY.get(Z.dtype, CERTIFY_DEFAULT))
    if not certified:
        U, c_ex = explicit_complement(Z[:, 0::2], Z[:, 1::2], gamma)
        kw.update(c=c_ex.double(), U=U)
        return M, g64, kw, None, c_ex.double()
    kw.update(c=c)
    if Ginv is None:  # c = 0 in every row
        return M, g64, kw, None, c
    iq = torch.arange(m, device=K.device) * 2 + 1
    M = M.clone()
    M[:, iq.unsqueeze(-1), iq.unsqueeze(0)] -= c.view(B, 1, 1) * Ginv
    return M, g64 + c, kw, Ginv, c


def operator_from_pairs(P: torch.Tensor, Q: torch.Tensor, gamma: torch.Tensor, eps: float, fallback: str,
                        h0: str, explicit_complement, sr1: bool = True) -> CompactOperator:
    """The operator of stored pairs (B, m, N) and γ (B, 1) with u = 0, every test from the Gram matrix (what
    :func:`~lsr1_core.learned.qn.qn_operator` of :func:`~lsr1_core.learned.qn.rebuild`'s vectors is, to
    rounding). ``explicit_complement(P, Q, γ)`` → (U, c): the QR path where the Gram projector is not certified."""
    B, m, N = P.shape
    Z = torch.stack([P, Q], 2).reshape(B, 2 * m, N)
    K = (Z @ Z.transpose(1, 2)).double()
    tiny = torch.finfo(P.dtype).tiny
    g64 = gamma.double()
    M = K.new_zeros(B, 2 * m, 2 * m)
    rhos, cvs = [], []
    for i in range(m):
        M, ok, rho, cv = add_pair(M, K, i, g64, eps, fallback, tiny, sr1=sr1)
        rhos.append(rho), cvs.append(cv)
    Cv = torch.stack(cvs, 1) if cvs else K.new_zeros(B, 0, 2 * m)
    M, a, kw, _, _ = with_complement(Z, K, M, g64, gamma, h0 == "two_scale", tiny, explicit_complement)
    rho = torch.stack(rhos, 1).to(P.dtype) if fallback == "bfgs" and rhos else (
        P.new_zeros(B, 0) if fallback == "bfgs" else None)
    v_last = (Cv[:, -1:].to(P.dtype) @ Z).squeeze(1) if m else P.new_zeros(B, N)
    return CompactOperator(Z, M, a, gamma, Cv=Cv[:, :-1], v_last=v_last, rho=rho, **kw)


def _dot(a, b):
    return (a.unsqueeze(-2) @ b.unsqueeze(-1)).view(-1)


def propose(cfg, P, Q, p, q, g, gamma_prev, sc, step_scale: float, explicit_complement) -> dict:
    """:func:`~lsr1_core.learned.qn.qn_propose` for a model whose correction is zero (module docstring): the same
    dictionary, computed from the Gram matrix. P, Q (B, l, N) the stored pairs and p, q, g (B, N), all in x; sc
    the diagonal metric's √D (or None)."""
    B, N = g.shape
    dtype = g.dtype
    tiny = torch.finfo(dtype).tiny
    eps = cfg.skip_eps
    base, s, m = append_pair(P, Q, p, q, g, cfg.memory)
    n = 2 * m
    ext = base[:, s:s + m + 1].reshape(B, 2 * m + 2, N)[:, :n + 1]  # [p_0, q_0, …, p, q, g] in x
    P_all, Q_all = base[:, s:s + m, 0], base[:, s:s + m, 1]
    if sc is not None:  # the method runs in y = x/√D: p/√D, q·√D, g·√D
        ext_y = torch.empty_like(ext)
        ext_y[:, 0:n:2] = P_all / sc.unsqueeze(1)
        ext_y[:, 1:n:2] = Q_all * sc.unsqueeze(1)
        ext_y[:, n] = g * sc
        ext = ext_y
    Z = ext[:, :n]
    py, qy, gy = ext[:, n - 2], ext[:, n - 1], ext[:, n]
    KK = (ext @ ext.transpose(1, 2)).double()
    K, kg = KK[:, :n, :n], KK[:, :n, n]
    gamma64 = envelope(K, gamma_prev, cfg.gamma_factor, tiny, newest=cfg.h0 == "bb")
    sr1 = cfg.update == "sr1"
    gamma = gamma64.to(dtype)
    g64 = gamma.double()  # the γ H uses is the one reported
    M = K.new_zeros(B, n, n)
    cvs, rhos = [], []
    for i in range(m - 1):
        M, _, rho, cv = add_pair(M, K, i, g64, eps, cfg.fallback, tiny, sr1=sr1)
        cvs.append(cv), rhos.append(rho)
    # the newest pair: H'q and H'g (+ the complement's part of Hg) in one product with the stored pairs
    iq = n - 1
    kq = K[:, :, iq]
    h = (M @ kq.unsqueeze(-1)).squeeze(-1)
    h[:, iq] += g64.squeeze(-1)
    cg0 = (M @ kg.unsqueeze(-1)).squeeze(-1)  # H'g = γg + Zᵀ cg0
    qHg = g64.squeeze(-1) * kg[:, iq] + (kq * cg0).sum(-1)
    qHq = (kq * h).sum(-1)
    cg = cg0.clone()
    two_scale = cfg.h0 == "two_scale"
    _, a, op_kw, Ginv, c = with_complement(Z, K, M, g64, gamma, two_scale, tiny, explicit_complement)
    if Ginv is not None:
        iqs = torch.arange(m, device=K.device) * 2 + 1
        cg[:, iqs] -= c * (Ginv @ kg[:, iqs].unsqueeze(-1)).squeeze(-1)
    Y = torch.stack([h, cg], 1).to(dtype) @ Z  # (B, 2, N): H'q and Hg's part in span{Z}
    Hq, Yg = Y[:, 0], Y[:, 1]
    w = py - Hq
    wq, ww, wg = _dot(w, qy), _dot(w, w), _dot(w, gy)
    wn, qn = ww.clamp_min(0).sqrt(), K[:, iq, iq].sqrt().to(dtype)
    M, ok, rho, cv = add_pair(M, K, m - 1, g64, eps, cfg.fallback, tiny,
                              w_test=(wq.double(), wn.double(), qn.double()), sr1=sr1)
    rhos.append(rho)
    v = torch.where(ok.unsqueeze(-1), w / wq.clamp_min(tiny).sqrt().unsqueeze(-1), torch.zeros_like(w))
    # d = H g: H'g (+ the complement's part) and the newest pair's update
    d = torch.addcmul(Yg, a.to(dtype), gy)
    took_bfgs = rho > 0
    coef_w = torch.where(ok, wg / wq.clamp_min(tiny), torch.zeros_like(wg))
    coef_p = torch.zeros_like(qHq)
    coef_h = torch.zeros_like(qHq)
    if bool(took_bfgs.any()):  # H g = H'g − ρ(pᵀg) H'q + (−ρ qᵀH'g + ρ²(pᵀg)(qᵀH'q) + ρ pᵀg) p
        pg = kg[:, n - 2]
        coef_p = torch.where(took_bfgs, -rho * qHg + rho * rho * pg * qHq + rho * pg, coef_p)
        coef_h = torch.where(took_bfgs, -rho * pg, coef_h)
    # w = p − H'q: coef_w·w + coef_p·p + coef_h·H'q = (coef_w + coef_p)·p + (coef_h − coef_w)·H'q
    d = d.addcmul_((coef_p.to(dtype) + coef_w).unsqueeze(-1), py)
    d = d.addcmul_((coef_h.to(dtype) - coef_w).unsqueeze(-1), Hq)
    if op_kw.get("U") is not None:  # the explicit complement (QR path)
        Ux, c_ex = op_kw["U"], op_kw["c"].to(dtype)
        d = d + c_ex * (gy - torch.einsum("bnl,bl->bn", Ux, torch.einsum("bnl,bn->bl", Ux, gy)))
    if Ginv is not None:
        iqs = torch.arange(m, device=K.device) * 2 + 1
        M = M.clone()
        M[:, iqs.unsqueeze(-1), iqs.unsqueeze(0)] -= c.view(B, 1, 1) * Ginv
    rho_all = torch.stack(rhos, 1).to(dtype) if cfg.fallback == "bfgs" else None
    Cv = torch.stack(cvs, 1) if cvs else K.new_zeros(B, 0, n)
    op = CompactOperator(Z, M, a, gamma, Cv=Cv, v_last=v, rho=rho_all, **op_kw)
    # secant residual of the new operator on its pair: 0 where SR1 or BFGS took the pair, w where it was skipped
    # (the explicit form's r − v vᵀq is rounding where the vector is used)
    skipped = ~ok
    bare = skipped & ~took_bfgs
    if sc is None:
        secant = torch.where(bare, ww, torch.zeros_like(ww))
        psq = K[:, n - 2, n - 2].to(dtype)
    else:
        px = P_all[:, -1]
        secant = torch.where(bare, ((sc * w) ** 2).sum(-1) if bool(bare.any()) else ww, torch.zeros_like(ww))
        psq = (px * px).sum(-1)
    rel_sq = torch.where(psq > 0, secant / psq.clamp_min(tiny), torch.zeros_like(secant))
    if sc is not None:
        d = sc * d
    W = LazyTensor((B, m, N), dtype, g.device, lambda: op.W)
    W.op = op
    alpha = g.new_full((), step_scale).expand(B, N)
    return {"v": v, "alpha": alpha, "d": d, "W": W, "op": op, "secant": secant, "rel_sq": rel_sq,
            "departure": g.new_zeros(B), "skipped": skipped, "bfgs": took_bfgs, "Hq": Hq, "gamma": gamma,
            "P": P_all, "Q": Q_all, "U": zeros_expanded(g, B, m, N)}
