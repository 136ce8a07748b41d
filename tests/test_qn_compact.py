"""The qn form's compact (Gram-matrix) path (lsr1_core.learned.compact) against its explicit form.

Where the learned correction is zero the operator is a·I + ZᵀMZ over the stored pairs; the compact path computes
it from the Gram matrix and must change rounding only: the same operator as ``qn_operator(rebuild(...))`` on
random pairs with positive and negative curvature (SR1, skipped and BFGS pairs), and whole runs that end where the
explicit path's end. Differences are asserted with margins, never as one machine's digits."""
import pytest
import torch

from lsr1_core.learned import LSR1Config, compact
from lsr1_core.learned.qn import bfgs_rho, qn_operator, rebuild, two_scale_complement


@pytest.fixture
def explicit():
    """A context that forces the explicit path (and always restores the flag)."""
    class _Force:
        def __enter__(self):
            compact.FORCE_EXPLICIT = True

        def __exit__(self, *exc):
            compact.FORCE_EXPLICIT = False
    yield _Force()
    compact.FORCE_EXPLICIT = False


def random_pairs(seed, B=4, m=8, N=30, shift=0.8, noise=0.05):
    """Pairs q = Hp + noise of an indefinite H (eigenvalues N(shift, 1)): some pairs SR1 takes, some it skips,
    some with pᵀq ≤ 0."""
    g = torch.Generator().manual_seed(seed)
    Qm, _ = torch.linalg.qr(torch.randn(B, N, N, generator=g, dtype=torch.float64))
    eig = torch.randn(B, N, generator=g, dtype=torch.float64) + shift
    H = Qm @ torch.diag_embed(eig) @ Qm.transpose(1, 2)
    P = torch.randn(B, m, N, generator=g, dtype=torch.float64)
    Q = (H @ P.transpose(1, 2)).transpose(1, 2) + noise * torch.randn(B, m, N, generator=g, dtype=torch.float64)
    gamma = torch.rand(B, 1, generator=g, dtype=torch.float64) * 0.3 + 0.05
    return P, Q, gamma, g


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fallback", ["bfgs", "skip"])
@pytest.mark.parametrize("h0", ["two_scale", "envelope"])
def test_compact_operator_equals_the_explicit_one(seed, fallback, h0):
    P, Q, gamma, g = random_pairs(seed)
    cfg = LSR1Config.qn(fallback=fallback, h0=h0)
    W = rebuild(P, Q, torch.zeros_like(P), gamma, cfg.skip_eps, fallback)
    ex = qn_operator(cfg, W, P, Q, gamma)
    co = compact.operator_from_pairs(P, Q, gamma, cfg.skip_eps, fallback, h0, two_scale_complement)
    # the premise: the pairs mix SR1, skipped and (with the fallback) BFGS updates
    used = (W != 0).any(-1)
    assert bool(used.any()) and bool((~used).any())
    if fallback == "bfgs":
        rho = bfgs_rho(P, Q, W, cfg.skip_eps)
        assert bool((rho > 0).any())
    u = torch.randn(P.shape[0], P.shape[2], generator=g, dtype=torch.float64)
    a, b = ex.matvec(u), co.matvec(u)
    assert float(((a - b).norm(dim=-1) / a.norm(dim=-1)).max()) < 1e-10
    A, C = ex.dense(), co.dense()
    assert float((A - C).abs().max() / A.abs().max()) < 1e-10
    # the buffer vectors, the BFGS weights and the complement agree too (masks where no test is near its threshold)
    assert float((co.W - W).abs().max() / W.abs().max()) < 1e-9
    assert torch.equal(co.W.abs().amax(-1) > 0, used)
    if fallback == "bfgs":
        torch.testing.assert_close(co.bfgs[2], ex.bfgs[2], rtol=1e-10, atol=0)
    else:
        assert co.bfgs is None
    if h0 == "two_scale":
        torch.testing.assert_close(co.complement[1], ex.complement[1], rtol=1e-12, atol=1e-15)
    else:
        assert co.complement is None


def test_masks_agree_with_the_explicit_tests_away_from_their_thresholds():
    """Over many random memories, the pair-by-pair decisions (SR1 used, BFGS) of the Gram recursion are the explicit
    recursion's wherever the explicit skip test is not within 10⁻⁶ (relative) of its threshold."""
    checked = 0
    for seed in range(20):
        P, Q, gamma, _ = random_pairs(100 + seed, B=6, m=8, N=12, shift=0.3, noise=0.2)
        eps = 1e-8
        W = rebuild(P, Q, torch.zeros_like(P), gamma, eps, "bfgs")
        co = compact.operator_from_pairs(P, Q, gamma, eps, "bfgs", "two_scale", two_scale_complement)
        # the explicit skip test's quantities, pair by pair (H_i q_i from the explicit operator of pairs < i)
        rho = bfgs_rho(P, Q, W, eps)
        for i in range(P.shape[1]):
            from lsr1_core.learned.qn import _partial
            Hq = _partial(W[:, :i], P[:, :i], Q[:, :i], rho[:, :i], gamma).matvec(Q[:, i])
            w = P[:, i] - Hq
            wq = (w * Q[:, i]).sum(-1)
            scale = w.norm(dim=-1) * Q[:, i].norm(dim=-1)
            clear = (wq - eps * scale).abs() > 1e-6 * scale
            used_ex = (W[:, i] != 0).any(-1)
            used_co = co.W[:, i].abs().amax(-1) > 0
            assert torch.equal(used_ex[clear], used_co[clear])
            assert torch.equal((rho[:, i] > 0)[clear], (co.bfgs[2][:, i] > 0)[clear])
            checked += int(clear.sum())
    assert checked > 500


def test_zero_pairs_and_dependent_differences_use_the_explicit_complement():
    """Zero pairs at the front of the memory (a restart, an unusable probe) make the QR drop coordinates, not
    directions: the compact path must then take the QR's complement, and equals the explicit operator still."""
    P, Q, gamma, g = random_pairs(7, B=3, m=6, N=10)
    P[:, :2] = 0
    Q[:, :2] = 0
    Q[1, 4] = 2.0 * Q[1, 3]  # an exactly dependent difference in one row
    cfg = LSR1Config.qn()
    W = rebuild(P, Q, torch.zeros_like(P), gamma, cfg.skip_eps, cfg.fallback)
    ex = qn_operator(cfg, W, P, Q, gamma)
    co = compact.operator_from_pairs(P, Q, gamma, cfg.skip_eps, cfg.fallback, cfg.h0, two_scale_complement)
    assert co._explicit  # the QR path was taken
    u = torch.randn(3, 10, generator=g, dtype=torch.float64)
    a, b = ex.matvec(u), co.matvec(u)
    assert float(((a - b).norm(dim=-1) / a.norm(dim=-1)).max()) < 1e-10
    # fewer coordinates than pairs: the same
    P2, Q2, gamma2, _ = random_pairs(8, B=2, m=6, N=4)
    W2 = rebuild(P2, Q2, torch.zeros_like(P2), gamma2, cfg.skip_eps, cfg.fallback)
    ex2 = qn_operator(cfg, W2, P2, Q2, gamma2)
    co2 = compact.operator_from_pairs(P2, Q2, gamma2, cfg.skip_eps, cfg.fallback, cfg.h0, two_scale_complement)
    torch.testing.assert_close(co2.dense(), ex2.dense(), rtol=1e-10, atol=1e-12)


def test_pair_buffer_never_rewrites_a_slot_a_view_can_see():
    """States kept from earlier steps (e.g. the operators of a trace) keep their pairs: a second proposal from the
    same state writes a new buffer instead of the slot the first one used."""
    from lsr1_core.learned.compact import append_pair
    B, N = 1, 5
    P = torch.zeros(B, 0, N, dtype=torch.float64)
    Q = P.clone()
    mk = lambda v: torch.full((B, N), float(v), dtype=torch.float64)  # noqa: E731
    base, s, m = append_pair(P, Q, mk(1), mk(2), mk(9), memory=3)
    P1, Q1 = base[:, s:s + m, 0], base[:, s:s + m, 1]
    base2, s2, m2 = append_pair(P1, Q1, mk(3), mk(4), mk(9), memory=3)
    assert base2 is base and m2 == 2
    # a second proposal from the first state: its slot is taken, so a new buffer
    base3, s3, m3 = append_pair(P1, Q1, mk(5), mk(6), mk(9), memory=3)
    assert base3 is not base
    assert float(base[:, s2 + 1, 0].max()) == 3.0 and float(base3[:, s3 + 1, 0].max()) == 5.0
    # the window slides (oldest dropped) and the buffer is replaced when full, the views staying valid
    P2, Q2 = base2[:, s2:s2 + m2, 0], base2[:, s2:s2 + m2, 1]
    for k in range(10):
        P2, Q2 = P2[:, -2:], Q2[:, -2:]
        b, s, m = append_pair(P2, Q2, mk(10 + k), mk(20 + k), mk(9), memory=3)
        old = P2.clone()
        P2, Q2 = b[:, s:s + m, 0], b[:, s:s + m, 1]
        torch.testing.assert_close(P2[:, :-1], old)
        assert float(P2[:, -1].max()) == 10 + k
