"""The qn form's operator in compact (Gram-matrix) form, for models whose learned correction is zero.

Where the generator's output is exactly zero (u = 0: the untrained start and every shipped qn card, whose output
layers are zero, at inference), every vector the qn form's update builds lies in the span of its stored pairs:
the SR1 vector of pair i is w_i = p_i − H_i q_i, a BFGS update adds p_i and H_i q_i, and the two-scale complement
c·(I − Π_Q) projects onto span{q_j}. So with Z = [p_0; q_0; p_1; q_1; …] (2m × N, the pairs interleaved, newest
last)

    H = γI + [SR1 and BFGS updates in order] + c·(I − Π_Q) = a·I + Zᵀ M Z

with a = γ + c and a small symmetric M (2m × 2m). The recursion of :func:`~lsr1_core.learned.qn.rebuild` runs on
the coefficients, in float64 whatever the data's dtype (in numpy: it is l×l arithmetic, where a torch call's
overhead would dominate), from the Gram matrix K = Z Zᵀ: pair i's H_i q_i has coefficients h = γ e_q + M K e_q, its
SR1 vector w = e_p − h, so wᵀq = wᵀK e_q and ‖w‖² = wᵀK w, with the same skip test (wᵀq > ε‖w‖‖q‖), BFGS rule
(:func:`~lsr1_core.learned.qn.bfgs_rho`'s) and updates M ← M + w wᵀ/wᵀq, or M ← M − ρ(e_p hᵀ + h e_pᵀ) + (ρ² qᵀHq + ρ) e_p e_pᵀ. The
envelope's γ and the complement's c come from K's diagonal. The buffer keeps K (a new pair needs only its and g's
products with the window, one O(lN) product). A step then costs that product, one product of [Z; g] with two
coefficient rows (H'q, and Hg before the newest pair's update) and a few O(N) vector operations, against the
explicit form's O(l²N) rebuild; with the diagonal metric the coordinates change every step, so K is recomputed
(one Gram product).

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
  used only where every column is *certified*: all ‖q_j‖ > 0, N ≥ m, every pivot of the normalised Gram (sin² of
  q_j's angle to the span of the earlier ones) above ``CERTIFY`` — 10⁻¹⁰ in float64, 10⁻⁴ in float32, i.e. 10⁵× and
  100× the Gram's own relative rounding (float32: ~10⁻⁶ at N = 10⁶, measured), so that the projector's error
  (≈ rounding / pivot) stays below 10⁻⁵ and 10⁻² along the least certain direction — and R_jj above 10× the drop
  threshold. Elsewhere (any row of the batch) the step takes the explicit QR of Q (:func:`qr_basis`, the U of
  :func:`~lsr1_core.learned.qn.two_scale_complement`) — O(m²N), only in those steps — so the operator is the
  explicit form's in those cases, to rounding.
* **Cancellation.** The operator's coefficients can be far larger than the operator where stored vectors are
  nearly dependent (always where N < 2m: the 2-D views), and then Zᵀ M Z loses digits that the explicit vectors
  keep. With the amplification bound amp = max_i Σ_j |M_ij|‖z_i‖‖z_j‖ / a: in float64 a step with eps·amp above
  ``AMPLIFICATION`` (10⁻⁹), and every step with N < 2m, is taken by the explicit path instead. In float32 the Gram
  matrix's own entries carry ~10⁻⁶ relative error, which the coefficients amplify too (measured direction errors
  ≈ 10⁻⁷–10⁻⁶·amp: 35 % at amp 5·10⁵ on the benchmark's ridge regression, where the explicit float32 path erred by
  2·10⁻³), so a float32 step with amp above ``RESCUE`` (10³) is recomputed in float64 (the pairs cast, one Gram
  product, O(lN); its results cast back); below it the float32 compact direction is within ~10⁻⁵ of the float64
  one (measured).
* **The pair buffer.** The pairs are kept in a buffer that grows by one slot per step (P and Q are views of it, written
  once: a slot is never rewritten while a view can see it, so states and operators kept from earlier steps stay
  valid); a full buffer is copied into a new one every ``memory`` steps. The buffer ``W`` of rank-one vectors is
  returned lazily (:class:`LazyTensor`: computed by one product the first time anything reads it, e.g. a
  restart, a saved state or the Curvature page), the corrections ``U`` as an expanded zero tensor.

``FORCE_EXPLICIT = True`` (module flag) makes :func:`~lsr1_core.learned.qn.qn_propose` take the explicit path for
every model (tests and ``experiments.optimizer_cost`` compare the two).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils._pytree import tree_map

from ..operators import CurvatureOperator

FORCE_EXPLICIT = False  # True: every model takes the explicit path (for comparisons)
REL_TOL = 1e-10  # two_scale_complement's drop rule: R_jj ≤ REL_TOL·max‖q_i‖
# the smallest normalised Cholesky pivot (sin² of a q_j's angle to the older ones' span) for which the Gram projector
# is used: 100× (float32) and 10⁵× (float64) the Gram's own relative rounding (~10⁻⁶ at N = 10⁶ in float32, measured)
CERTIFY = {torch.float64: 1e-10, torch.float32: 1e-4}
CERTIFY_DEFAULT = 1e-4
# below CERTIFY but above these, the columns are still well apart for an orthonormalisation from the Gram matrix
# (two passes of Cholesky QR, each from a Gram matrix, the second of an almost orthonormal basis): the QR's
# projector, to rounding, at O(lN) cost; below them the QR itself
CHOLQR = {torch.float64: 1e-13, torch.float32: 1e-5}
CHOLQR_DEFAULT = 1e-5
# the compact form's rounding is amplified by cancellation among the stored vectors, at most by
# amp = max_i Σ_j |M_ij|‖z_i‖‖z_j‖ / a (a bound; measured errors are 10²–10⁴× below eps·amp); where eps·amp exceeds
# this the step is taken by the explicit path instead (e.g. N = 2: the 2-D views)
AMPLIFICATION = 1e-9  # float64: eps·amp above this → the explicit path
RESCUE = 1e3  # float32: amp above this → the step is recomputed in float64 (float32 Gram entries carry ~1e-6 relative
# error, and measured direction errors are ~1e-7–1e-6·amp: up to 35 % at amp 5e5, where the explicit float32 path
# erred by 2e-3)


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


_CONSTS: dict = {}


def shared_const(value: float, shape: tuple, dtype: torch.dtype, device) -> torch.Tensor:
    """``value`` everywhere in ``shape``, one element expanded, made once and shared (a cache of at most 256): for
    constants that are read, never written."""
    key = (value, shape, dtype, device)
    t = _CONSTS.get(key)
    if t is None:
        if len(_CONSTS) > 256:
            _CONSTS.clear()
        t = _CONSTS[key] = torch.full((), value, dtype=dtype, device=device).expand(shape)
    return t


def zeros_expanded(like: torch.Tensor, *shape) -> torch.Tensor:
    """Zeros of ``shape`` that hold one element (an expanded scalar)."""
    return like.new_zeros(()).expand(*shape)


def is_zero(t: torch.Tensor | None) -> bool:
    """True where t is None, empty or all zero (an expanded zero is checked on one element)."""
    if t is None or getattr(t, "_lsr1_zero", False) or t.numel() == 0:  # (a shared zero: qn_one._const marks it)
        return True
    t = plain(t)
    if all(s == 0 for s in t.stride()):  # (its one element, read without reshaping: that would copy it out)
        return not bool(t[(0,) * t.dim()])
    return not bool(t.any())


# --- the pair buffer -------------------------------------------------------------------------------------------
def sync_stats(base: torch.Tensor) -> None:
    """Fill the buffer's pair statistics tensor (``pair_stats``') from the numbers the one-row step kept for the
    slots it added since (:func:`lsr1_core.learned.qn_one._stats`), before anything reads the tensor."""
    j = getattr(base, "_lsr1_stats_dirty", None)
    if j is None:
        return
    upto = base._lsr1_pairstats_upto
    rows = base._lsr1_stats_one[j:upto]
    if rows:
        base._lsr1_pairstats[0, j:upto] = torch.tensor(rows, dtype=torch.float64, device=base.device)
    base._lsr1_stats_dirty = None


def next_slots(base: torch.Tensor, s: int, m: int):
    """The (p, q) slots where :func:`append_pair` will store the next pair after the window base[:, s:s+m] without a
    new buffer (so a step can compute its pair into them and the next step need not copy it), or None."""
    j = s + m
    if base._lsr1_hwm != j or j + 1 >= base.shape[1]:
        return None
    base._lsr1_reserved = j  # (append_pair then writes no other pair over it)
    return base[:, j, 0], base[:, j, 1]


def _buffer_of(P: torch.Tensor, Q: torch.Tensor):
    """(base, s) where P, Q are base[:, s:s+m, 0], base[:, s:s+m, 1] of a pair buffer, else None."""
    base = P._base
    if base is None or Q._base is not base or getattr(base, "_lsr1_hwm", None) is None:
        return None
    B, cap, _, N = base.shape
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
    """Store the newest pair after the stored ones and g after it: returns (base, s, m, fresh) with the m pairs in
    base[:, s:s+m] (interleaved p, q rows) and g in base[:, s+m, 0] (a scratch row no view sees). Writes into the
    same buffer where P, Q are its newest slots and the next slots are free (fresh False); otherwise copies into
    a new one (fresh True). ``g`` None: no scratch row is written (the two-loop path does not read it). A new
    buffer keeps the pairs' inner products of the old one (:func:`~lsr1_core.learned.qn._pair_stats`)."""
    B, N = p.shape
    m_old = P.shape[1]
    found = _buffer_of(P, Q) if m_old else None
    if found is not None:
        base, s = found
        j = s + m_old
        if base._lsr1_hwm == j and j + 1 < base.shape[1] and base.device == p.device and base.dtype == p.dtype:
            # a pair computed into its slot already (next_slots) is not copied; a slot another state's pair was
            # computed into is not overwritten by a different pair (the new buffer below takes it)
            copy = [(slot, v) for slot, v in ((base[:, j, 0], p), (base[:, j, 1], q))
                    if not (v.data_ptr() == slot.data_ptr() and v.shape == slot.shape and v.stride() == slot.stride())]
            if not (copy and getattr(base, "_lsr1_reserved", -1) == j):
                for slot, v in copy:
                    slot.copy_(v)
                if g is not None:
                    base[:, j + 1, 0].copy_(g)
                base._lsr1_hwm = j + 1
                return base, s, m_old + 1, False
    cap = max(memory, m_old + 1) + max(memory, 1) + 1
    shadow = None  # float64 copies of the window (see _in_float64) follow it into the new buffer
    if found is not None:
        old = getattr(found[0], "_lsr1_shadow", None)
        if old is not None and old[0] == found[1] + m_old:
            shadow = (m_old,) + tuple(old[1:])
    base = p.new_empty(B, cap, 2, N)
    if m_old:
        base[:, :m_old, 0].copy_(P)
        base[:, :m_old, 1].copy_(Q)
    base[:, m_old, 0].copy_(p)
    base[:, m_old, 1].copy_(q)
    if g is not None:
        base[:, m_old + 1, 0].copy_(g)
    base._lsr1_hwm = m_old + 1
    base._lsr1_gram = None
    base._lsr1_gram_upto = -1
    base._lsr1_shadow = shadow
    if found is not None:  # the window's pᵀq, pᵀp, qᵀq move with it
        sync_stats(found[0])
        old = getattr(found[0], "_lsr1_pairstats", None)
        if old is not None and getattr(found[0], "_lsr1_pairstats_upto", -1) == found[1] + m_old:
            stats = old.new_zeros(B, cap, 3)
            stats[:, :m_old] = old[:, found[1]:found[1] + m_old]
            base._lsr1_pairstats, base._lsr1_pairstats_upto = stats, m_old
    return base, 0, m_old + 1, True


def window_gram(base, s: int, m: int, fresh: bool):
    """(K (B, 2m, 2m), Z g (B, 2m)) in float64 for the pairs base[:, s:s+m] and g in the scratch row after them.

    The buffer keeps the inner products of its rows (slots are written once, so they stay valid): a new pair
    needs only its and g's products with the window (one product with 3 columns, O(mN)); a new buffer, one
    Gram product of its window."""
    B, cap, _, N = base.shape
    n = 2 * m
    ext = base[:, s:s + m + 1].reshape(B, n + 2, N)[:, :n + 1]
    cache = getattr(base, "_lsr1_gram", None)
    if fresh or cache is None or getattr(base, "_lsr1_gram_upto", -1) != s + m - 1:
        # a new buffer, or slots whose products were never taken (steps computed elsewhere): the window's Gram
        KK = (ext @ ext.transpose(1, 2)).double()
        if cache is None:
            cache = KK.new_zeros(B, 2 * cap, 2 * cap)
        cache[:, 2 * s:2 * s + n, 2 * s:2 * s + n] = KK[:, :n, :n]
        base._lsr1_gram = cache
        base._lsr1_gram_upto = s + m
        return KK[:, :n, :n], KK[:, :n, n]
    new = ext[:, n - 2:n + 1]  # p, q, g rows
    R = (ext @ new.transpose(1, 2)).double()  # (B, 2m+1, 3)
    lo, hi = 2 * s, 2 * s + n
    base._lsr1_gram_upto = s + m
    cache[:, lo:hi, hi - 2:hi] = R[:, :n, :2]
    cache[:, hi - 2:hi, lo:hi] = R[:, :n, :2].transpose(1, 2)
    return cache[:, lo:hi, lo:hi].clone(), R[:, :n, 2]


# --- the coefficient algebra (float64, in numpy: l×l arithmetic, where a torch call's overhead would dominate) --
def envelope(K: np.ndarray, gamma_prev: np.ndarray, factor: float, tiny: float, newest: bool = False) -> np.ndarray:
    """:func:`~lsr1_core.solvers.sr1.envelope_scale` from the Gram matrix (B, 2m, 2m): factor·min pᵢᵀqᵢ/qᵢᵀqᵢ over
    the pairs with positive curvature, the previous γ (B,) where there is none. (B,)"""
    m = K.shape[1] // 2
    if m == 0:
        return gamma_prev
    ip = np.arange(m) * 2
    pq, qq = K[:, ip, ip + 1], K[:, ip + 1, ip + 1]
    with np.errstate(all="ignore"):
        bb = factor * pq / np.maximum(qq, tiny)
        use = (pq > 0) & (qq > 0) & np.isfinite(bb) & np.isfinite(qq)
    if newest:  # h0 = "bb": the newest pair with positive curvature (envelope_scale's newest=True)
        last = np.where(use, np.arange(m), -1).max(-1)
        return np.where(last >= 0, bb[np.arange(bb.shape[0]), np.maximum(last, 0)], gamma_prev)
    low = np.where(use, bb, np.inf).min(-1)
    return np.where(np.isfinite(low), low, gamma_prev)


def add_pair(M: np.ndarray, K: np.ndarray, i: int, gamma: np.ndarray, eps: float, fallback: str, tiny: float,
             w_test=None, sr1: bool = True):
    """Add pair i's update to H = γI + ZᵀMZ in coefficient space (M (B, n, n), returned new; γ (B,)).

    Returns (M, ok, rho, cv): ok (B,) the SR1 vector is used, rho (B,) the BFGS update's 1/pᵀq (0 where none), cv
    (B, n) the coefficients of v = w/√(wᵀq) (0 where not used). ``w_test`` = (wᵀq, ‖w‖, ‖q‖) computed elsewhere
    (the explicit newest vector) replaces the Gram's values in the skip test."""
    ip, iq = 2 * i, 2 * i + 1
    kq = K[:, :, iq]
    h = np.matmul(M, kq[:, :, None])[:, :, 0]
    h[:, iq] += gamma
    cw = -h
    cw[:, ip] += 1
    with np.errstate(all="ignore"):
        if w_test is None:
            wq = (cw * kq).sum(-1)
            wn = np.sqrt(np.maximum(np.einsum("bi,bij,bj->b", cw, K, cw), 0))
            qn = np.sqrt(np.maximum(K[:, iq, iq], 0))
        else:
            wq, wn, qn = w_test
        ok = (wq > eps * wn * qn) & (wq > 0) & np.isfinite(wq)
        if not sr1:  # update = "bfgs": no SR1 vector
            ok = np.zeros_like(ok)
        wq_safe = np.where(ok, wq, 1.0)
        cw = np.where(ok[:, None], cw, 0.0)
        M = M + cw[:, :, None] * cw[:, None, :] / wq_safe[:, None, None]
        cv = cw / np.sqrt(wq_safe)[:, None]
        rho = np.zeros_like(wq)
        if fallback == "bfgs":
            pq, pp, qq = K[:, ip, iq], K[:, ip, ip], K[:, iq, iq]
            use = ~ok & (pq > eps * np.sqrt(np.maximum(pp, 0)) * np.sqrt(np.maximum(qq, 0))) & (pq > 0) & \
                np.isfinite(pq)
            if use.any():
                rho = np.where(use, 1 / np.maximum(pq, tiny), 0.0)
                qhq = (kq * h).sum(-1)
                top = np.where(use, rho * rho * qhq + rho, 0.0)
                rh = np.where(use[:, None], rho[:, None] * h, 0.0)
                M = M.copy()
                M[:, ip, :] -= rh
                M[:, :, ip] -= rh
                M[:, ip, ip] += top
    return M, ok, rho, cv


def complement(K: np.ndarray, gamma: np.ndarray, N: int, tiny: float, certify: float, cholqr: float):
    """The two-scale complement from the Gram matrix: (c (B,), mode, X). mode "gram": Π_Q = Qᵀ X Q (X = G⁻¹,
    (B, m, m)); "cholqr": the columns are apart enough for U₁ = X Q (X = L⁻¹D⁻¹ of the normalised Gram's Cholesky
    factor) to be orthonormalised once more from its own Gram matrix; "qr": the explicit QR (module docstring);
    "none": c = 0 in every row (nothing to project)."""
    m = K.shape[1] // 2
    ip = np.arange(m) * 2
    pq, qq = K[:, ip, ip + 1], K[:, ip + 1, ip + 1]
    with np.errstate(all="ignore"):
        ok = (pq > 0) & (qq > 0) & np.isfinite(pq) & np.isfinite(qq)
        bb = np.where(ok, pq / np.maximum(qq, tiny), 0.0)
    newest = np.where(ok, np.arange(m), -1).max(-1)
    gbb = np.take_along_axis(bb, np.maximum(newest, 0)[:, None], 1)[:, 0]
    c = np.where(newest >= 0, np.maximum(gbb - gamma, 0.0), 0.0)
    if not (c > 0).any():
        return c, "none", None
    if N < m or not np.isfinite(qq).all():
        return c, "qr", None
    D = np.sqrt(qq)
    if not (D > 0).all():
        return c, "qr", None
    G = K[:, ip + 1][:, :, ip + 1]
    Cn = G / (D[:, :, None] * D[:, None, :])
    try:
        L = np.linalg.cholesky(Cn)
    except np.linalg.LinAlgError:
        return c, "qr", None
    piv = np.diagonal(L, axis1=1, axis2=2) ** 2
    R = D * np.sqrt(piv)
    if (piv <= cholqr).any() or (R <= 10 * REL_TOL * D.max(-1, keepdims=True)).any():
        return c, "qr", None
    Li = np.linalg.inv(L)
    if (piv <= certify).any():
        return c, "cholqr", Li / D[:, None, :]
    Ci = np.matmul(Li.transpose(0, 2, 1), Li)
    return c, "gram", Ci / (D[:, :, None] * D[:, None, :])


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _t(a: np.ndarray, like: torch.Tensor, dtype=None) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=dtype or torch.float64)


def project(basis: torch.Tensor, binv, u: torch.Tensor) -> torch.Tensor:
    """Bᵀ X B u (X = binv, None: I): the projection of u (B, N) onto the rows of B (B, r, N)."""
    coef = basis @ u.unsqueeze(-1)
    if binv is not None:
        coef = (binv @ coef.double()).to(u.dtype)
    return (basis.transpose(1, 2) @ coef).squeeze(-1)


class CompactOperator(CurvatureOperator):
    """H = a·I + Zᵀ M Z (+ c·(I − UUᵀ) where the explicit complement was used): the qn form's operator from its
    stored pairs (module docstring). Z (B, 2m, N) the pairs interleaved, M (B, 2m, 2m) float64, a (B, 1) float64.

    Attributes the explicit :class:`~lsr1_core.learned.model.LSR1Operator` has and code reads: ``scale`` (γ),
    ``bfgs`` ((P, Q, ρ) or None), ``complement`` ((U, c) or None; U from the explicit QR, computed on first use),
    ``W`` (the rank-one vectors (B, m, N), computed on first use)."""

    def __init__(self, Z, M, a, gamma, *, Cv, v_last, rho=None, c=None, basis=None, basis_inv=None,
                 two_scale=False, explicit_complement=None):
        self.Z, self.M, self.a, self.scale = Z, M, a, gamma
        self._Cv, self._v_last, self._rho = Cv, v_last, rho
        # the complement where it is not in M: c·(I − Bᵀ X B) with B = basis (B, r, N), X = basis_inv (None: I)
        self._c, self._basis, self._binv, self._explicit = c, basis, basis_inv, basis is not None
        self._U = basis.transpose(1, 2) if basis is not None and basis_inv is None else None
        self._two_scale, self._explicit_complement = two_scale, explicit_complement
        self._W = None
        self.dtype, self.device = Z.dtype, Z.device
        self.out_dtype = Z.dtype  # a float32 step recomputed in float64 answers in float32

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
        if u.dtype != self.dtype:
            return self.matvec(u.to(self.dtype)).to(u.dtype)
        coef = (self.M @ (self.Z @ u.unsqueeze(-1)).double()).to(self.dtype)
        out = torch.baddbmm(u.unsqueeze(-1) * self.a.to(self.dtype).unsqueeze(-1), self.Z.transpose(1, 2), coef)
        out = out.squeeze(-1)
        if self._explicit:
            out = out + self._c.to(self.dtype) * (u - project(self._basis, self._binv, u))
        return out

    def dense(self) -> torch.Tensor:
        B, N = self.shape
        eye = torch.eye(N, dtype=self.dtype, device=self.device)
        out = self.a.to(self.dtype).view(B, 1, 1) * eye + self.Z.transpose(1, 2) @ self.M.to(self.dtype) @ self.Z
        if self._explicit:
            Bs = self._basis
            X = Bs.new_zeros(0) if self._binv is None else self._binv.to(self.dtype)
            proj = Bs.transpose(1, 2) @ (Bs if self._binv is None else X @ Bs)
            out = out + self._c.to(self.dtype).view(B, 1, 1) * (eye - proj)
        return out

    def detach(self):
        return self


def qr_basis(Q: torch.Tensor, K: np.ndarray) -> torch.Tensor:
    """:func:`~lsr1_core.learned.qn.two_scale_complement`'s U: the QR factor of Q's columns, those whose R diagonal is
    at most REL_TOL·max‖q_i‖ zeroed (‖q_i‖ from the Gram matrix K)."""
    U, R = torch.linalg.qr(Q.transpose(1, 2))
    iq = np.arange(Q.shape[1]) * 2 + 1
    tol = _t(REL_TOL * np.sqrt(np.maximum(K[:, iq, iq], 0)).max(-1, keepdims=True), Q, R.dtype)
    keep = torch.diagonal(R, dim1=1, dim2=2).abs() > tol
    if not bool(keep.all()):
        U = U * keep.unsqueeze(1).to(U.dtype)
    return U


def with_complement(Z, K, g64, gamma, two_scale: bool, tiny: float):
    """The two-scale complement of H = γI + ZᵀMZ (K: the Gram matrix, numpy): returns (a (B,), kwargs of
    :class:`CompactOperator`, Ginv (B, m, m) or None where the Gram projector is not used, c (B,)). Where it is not,
    the kwargs hold the complement's basis (B, r, N) and the inverse of its Gram matrix (None: orthonormal)."""
    B, _, N = Z.shape
    kw = {"two_scale": two_scale}
    if not two_scale:
        return g64, kw, None, None
    c, mode, X = complement(K, g64, N, tiny, CERTIFY.get(Z.dtype, CERTIFY_DEFAULT),
                            CHOLQR.get(Z.dtype, CHOLQR_DEFAULT))
    kw.update(c=_t(c, Z).view(B, 1))
    if mode == "qr":
        kw.update(basis=qr_basis(Z[:, 1::2], K).transpose(1, 2))
        return g64, kw, None, c
    if mode == "cholqr":  # U₁ = X Q (orthonormal to ~rounding/pivot), then the projector from U₁'s own Gram matrix
        U1 = _t(X, Z, Z.dtype) @ Z[:, 1::2]
        G1 = _np(U1 @ U1.transpose(1, 2))
        kw.update(basis=U1, basis_inv=_t(np.linalg.inv(G1), Z))
        return g64, kw, None, c
    if mode == "none":
        return g64, kw, None, c
    return g64 + c, kw, X, c


def _with_projector(M: np.ndarray, Ginv, c) -> np.ndarray:
    """M − c·E_Q Ginv E_Qᵀ: the complement's −c·Π_Q in coefficient space."""
    if Ginv is None:
        return M
    m = M.shape[1] // 2
    iq = np.arange(m) * 2 + 1
    M = M.copy()
    M[:, iq[:, None], iq[None, :]] -= c[:, None, None] * Ginv
    return M


@np.errstate(all="ignore")  # overflowed or underflowed Gram entries end in the explicit path, silently
def operator_from_pairs(P: torch.Tensor, Q: torch.Tensor, gamma: torch.Tensor, eps: float, fallback: str,
                        h0: str, explicit_complement, sr1: bool = True) -> CompactOperator:
    """The operator of stored pairs (B, m, N) and γ (B, 1) with u = 0, every test from the Gram matrix (what
    :func:`~lsr1_core.learned.qn.qn_operator` of :func:`~lsr1_core.learned.qn.rebuild`'s vectors is, to
    rounding). ``explicit_complement(P, Q, γ)`` → (U, c): the complement the operator reports (U from the QR)."""
    B, m, N = P.shape
    Z = torch.stack([P, Q], 2).reshape(B, 2 * m, N)
    K = _np(Z @ Z.transpose(1, 2))
    tiny = torch.finfo(P.dtype).tiny
    g64 = _np(gamma)[:, 0]
    M = np.zeros((B, 2 * m, 2 * m))
    rhos, cvs = [], []
    for i in range(m):
        M, _, rho, cv = add_pair(M, K, i, g64, eps, fallback, tiny, sr1=sr1)
        rhos.append(rho), cvs.append(cv)
    Cv = np.stack(cvs, 1) if cvs else np.zeros((B, 0, 2 * m))
    a, kw, Ginv, c = with_complement(Z, K, g64, gamma, h0 == "two_scale", tiny)
    M = _with_projector(M, Ginv, c)
    rho = _t(np.stack(rhos, 1), P, P.dtype) if fallback == "bfgs" and rhos else (
        P.new_zeros(B, 0) if fallback == "bfgs" else None)
    v_last = (_t(Cv[:, -1:], P, P.dtype) @ Z).squeeze(1) if m else P.new_zeros(B, N)
    return CompactOperator(Z, _t(M, P), _t(a, P).view(B, 1), gamma, Cv=_t(Cv[:, :-1], P), v_last=v_last, rho=rho,
                           explicit_complement=explicit_complement, **kw)


def _dot(a, b):
    return (a.unsqueeze(-2) @ b.unsqueeze(-1)).view(-1)


@np.errstate(all="ignore")  # overflowed or underflowed Gram entries end in the explicit path, silently
def _in_float64(cfg, base, s, m, g, gamma_prev, sc, step_scale, explicit_complement):
    """The step of float32 pairs (base[:, s:s+m], the newest last) recomputed in float64 (the Gram matrix and every
    product), its results in the pairs' dtype; the pairs stay in their float32 buffer. The float64 pairs are kept
    on the buffer while steps keep needing them, so the next step appends one pair (O(lN)) instead of casting the
    window again. None where even float64 leaves too much cancellation."""
    dtype = g.dtype
    l = m - 1
    P_all, Q_all = base[:, s:s + m, 0], base[:, s:s + m, 1]
    shadow = getattr(base, "_lsr1_shadow", None)
    if shadow is not None and shadow[0] == s + l and shadow[1].shape[1] >= l:
        P64, Q64 = shadow[1][:, shadow[1].shape[1] - l:], shadow[2][:, shadow[2].shape[1] - l:]
    else:
        P64, Q64 = P_all[:, :l].double(), Q_all[:, :l].double()
    out = propose(cfg, P64, Q64, P_all[:, l].double(), Q_all[:, l].double(), g.double(), gamma_prev.double(),
                  None if sc is None else sc.double(), step_scale, explicit_complement,
                  tol=10 * torch.finfo(dtype).eps)  # float32's accuracy is all the step needs
    if out is None:
        base._lsr1_shadow = None
        return None
    amp = out.pop("amp")
    # keep the float64 pairs while the step needed them (the next step then starts in float64 too)
    base._lsr1_shadow = (s + m, out["P"], out["Q"]) if amp > RESCUE else None
    op = out["op"]
    op.out_dtype = dtype
    B, _, N = P_all.shape
    W = LazyTensor((B, m, N), dtype, g.device, lambda: op.W.to(dtype))
    W.op = op
    for key in ("v", "d", "Hq", "gamma", "secant", "rel_sq", "departure"):
        out[key] = out[key].to(dtype)
    out.update(W=W, P=P_all, Q=Q_all, U=zeros_expanded(g, B, m, N), alpha=g.new_full((), step_scale).expand(B, N))
    return out


@np.errstate(all="ignore")  # overflowed or underflowed Gram entries end in the explicit path, silently
def propose(cfg, P, Q, p, q, g, gamma_prev, sc, step_scale: float, explicit_complement, tol: float | None = None):
    """:func:`~lsr1_core.learned.qn.qn_propose` for a model whose correction is zero (module docstring): the same
    dictionary, computed from the Gram matrix. P, Q (B, l, N) the stored pairs and p, q, g (B, N), all in x; sc
    the diagonal metric's √D (or None). None where the explicit path must take the step: fewer coordinates than
    stored vectors, or more cancellation among them than ``AMPLIFICATION`` allows."""
    B, N = g.shape
    dtype = g.dtype
    if N < 2 * (P.shape[1] + 1):  # more stored vectors than coordinates: the explicit path (cheap at such N)
        return None
    tiny = torch.finfo(dtype).tiny
    eps = cfg.skip_eps
    base, s, m, fresh = append_pair(P, Q, p, q, g, cfg.memory)
    if dtype != torch.float64 and getattr(base, "_lsr1_shadow", None) is not None and \
            base._lsr1_shadow[0] == s + m - 1:  # the last step needed float64: so does this one, most likely
        return _in_float64(cfg, base, s, m, g, gamma_prev, sc, step_scale, explicit_complement)
    n = 2 * m
    ext = base[:, s:s + m + 1].reshape(B, 2 * m + 2, N)[:, :n + 1]  # [p_0, q_0, …, p, q, g] in x
    P_all, Q_all = base[:, s:s + m, 0], base[:, s:s + m, 1]
    if sc is None:
        Kt, kgt = window_gram(base, s, m, fresh)
    else:  # the method runs in y = x/√D: p/√D, q·√D, g·√D (new coordinates each step: the whole Gram)
        ext_y = torch.empty_like(ext)
        ext_y[:, 0:n:2] = P_all / sc.unsqueeze(1)
        ext_y[:, 1:n:2] = Q_all * sc.unsqueeze(1)
        ext_y[:, n] = g * sc
        ext = ext_y
        KK = (ext @ ext.transpose(1, 2)).double()
        Kt, kgt = KK[:, :n, :n], KK[:, :n, n]
    Z = ext[:, :n]
    py = ext[:, n - 2]
    K, kg = _np(Kt), _np(kgt)
    gamma = _t(envelope(K, _np(gamma_prev)[:, 0], cfg.gamma_factor, tiny, newest=cfg.h0 == "bb"), g,
               dtype).view(B, 1)
    sr1 = cfg.update == "sr1"
    g64 = _np(gamma)[:, 0]  # the γ H uses is the one reported
    M = np.zeros((B, n, n))
    cvs, rhos = [], []
    for i in range(m - 1):
        M, _, rho, cv = add_pair(M, K, i, g64, eps, cfg.fallback, tiny, sr1=sr1)
        cvs.append(cv), rhos.append(rho)
    # the newest pair: H'q and the part of Hg before its update, in one product with [Z; g]
    iq = n - 1
    kq = K[:, :, iq]
    h = np.matmul(M, kq[:, :, None])[:, :, 0]
    h[:, iq] += g64
    cg = np.matmul(M, kg[:, :, None])[:, :, 0]  # H'g = γg + Zᵀ cg
    qHg = g64 * kg[:, iq] + (kq * cg).sum(-1)
    qHq = (kq * h).sum(-1)
    two_scale = cfg.h0 == "two_scale"
    a, op_kw, Ginv, c = with_complement(Z, K, g64, gamma, two_scale, tiny)
    if Ginv is not None:
        iqs = np.arange(m) * 2 + 1
        cg[:, iqs] -= c[:, None] * np.matmul(Ginv, kg[:, iqs, None])[:, :, 0]
    coef = np.zeros((B, 2, n + 1))
    coef[:, 0, :n] = h
    coef[:, 1, :n] = cg
    coef[:, 1, n] = a
    Y = _t(coef, g, dtype) @ ext  # (B, 2, N)
    Hq, d = Y[:, 0], Y[:, 1]
    w = py - Hq
    wqg = (w.unsqueeze(1) @ ext[:, n - 1:n + 1].transpose(1, 2)).view(B, 2)  # wᵀq, wᵀg (rows q, g adjacent)
    ww = _dot(w, w)
    wq_t = wqg[:, 0]
    stats = _np(torch.stack([wqg[:, 0], wqg[:, 1], ww], 1))
    wq, wg, wn = stats[:, 0], stats[:, 1], np.sqrt(np.maximum(stats[:, 2], 0))
    M, ok, rho, cv = add_pair(M, K, m - 1, g64, eps, cfg.fallback, tiny,
                              w_test=(wq, wn, np.sqrt(np.maximum(K[:, iq, iq], 0))), sr1=sr1)
    rhos.append(rho)
    ok_t = torch.from_numpy(ok).to(g.device)
    if ok.all():
        v = w * wq_t.rsqrt().unsqueeze(-1)
    else:
        v = torch.where(ok_t.unsqueeze(-1), w / wq_t.clamp_min(tiny).sqrt().unsqueeze(-1), torch.zeros_like(w))
    # the newest pair's update: SR1 adds w (wᵀg)/(wᵀq); BFGS
    # H g = H'g − ρ(pᵀg) H'q + (−ρ qᵀH'g + ρ²(pᵀg)(qᵀH'q) + ρ pᵀg) p
    took_bfgs = rho > 0
    with np.errstate(all="ignore"):
        coef_w = np.where(ok, wg / np.where(ok, wq, 1.0), 0.0)
        pg = kg[:, n - 2]
        coef_p = np.where(took_bfgs, -rho * qHg + rho * rho * pg * qHq + rho * pg, 0.0)
        coef_h = np.where(took_bfgs, -rho * pg, 0.0)
    # w = p − H'q: coef_w·w + coef_p·p + coef_h·H'q = (coef_w + coef_p)·p + (coef_h − coef_w)·H'q
    cp, ch = coef_w + coef_p, coef_h - coef_w
    if (cp != 0).any() or (ch != 0).any():
        d = d.addcmul_(_t(cp, g, dtype).unsqueeze(-1), py).addcmul_(_t(ch, g, dtype).unsqueeze(-1), Hq)
    if op_kw.get("basis") is not None:  # the complement outside M (QR or Cholesky-QR basis)
        gy = ext[:, n]
        d = d.add_(op_kw["c"].to(dtype) * (gy - project(op_kw["basis"], op_kw.get("basis_inv"), gy)))
    M = _with_projector(M, Ginv, c)
    with np.errstate(all="ignore"):  # an overflowed Gram matrix gives amp = inf or NaN: the explicit path then
        nu = np.sqrt(np.maximum(np.diagonal(K, axis1=1, axis2=2), 0))
        amp = (np.abs(M) * nu[:, :, None] * nu[:, None, :]).sum(-1).max(-1) / np.maximum(a, tiny)
    if dtype != torch.float64 and not (amp <= RESCUE).all():
        return _in_float64(cfg, base, s, m, g, gamma_prev, sc, step_scale, explicit_complement)
    if dtype == torch.float64 and not (torch.finfo(dtype).eps * amp <= (AMPLIFICATION if tol is None else tol)).all():
        return None  # too much cancellation among the stored vectors: the explicit path takes this step
    rho_all = _t(np.stack(rhos, 1), g, dtype) if cfg.fallback == "bfgs" else None
    Cv = _t(np.stack(cvs, 1), g) if cvs else Kt.new_zeros(B, 0, n)
    op = CompactOperator(Z, _t(M, g), _t(a, g).view(B, 1), gamma, Cv=Cv, v_last=v, rho=rho_all,
                         explicit_complement=explicit_complement, **op_kw)
    # secant residual of the new operator on its pair: 0 where SR1 or BFGS took the pair, w where it was skipped
    # (the explicit form's r − v vᵀq is rounding where the vector is used)
    skipped = ~ok_t
    took = torch.from_numpy(took_bfgs).to(g.device)
    bare = skipped & ~took
    if sc is None:
        secant = torch.where(bare, ww, torch.zeros_like(ww))
        psq = Kt[:, n - 2, n - 2].to(dtype)
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
            "departure": g.new_zeros(B), "skipped": skipped, "bfgs": took, "Hq": Hq, "gamma": gamma,
            "P": P_all, "Q": Q_all, "U": zeros_expanded(g, B, m, N), **({"amp": float(amp.max())} if tol else {})}
