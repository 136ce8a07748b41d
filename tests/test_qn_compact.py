"""The qn form's compact (Gram-matrix) path (lsr1_core.learned.compact) against its explicit form.

Where the learned correction is zero the operator is a·I + ZᵀMZ over the stored pairs; the compact path computes
it from the Gram matrix and must change rounding only: the same operator as ``qn_operator(rebuild(...))`` on
random pairs with positive and negative curvature (SR1, skipped and BFGS pairs), and whole runs that end where the
explicit path's end. Differences are asserted with margins, never as one machine's digits."""
import io

import pytest
import torch

from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Optimizer, LSR1Solver, compact
from lsr1_core.learned.qn import bfgs_rho, qn_operator, rebuild, two_scale_complement
from lsr1_core.objectives import (
    TEACHING_FUNCTIONS,
    Quadratic,
    Rastrigin,
    Rosenbrock,
    teaching_function,
)
from lsr1_core.solvers import run


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


def _quadratic(n, cond, seed=0):
    g = torch.Generator().manual_seed(seed)
    Qm, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    A = ((Qm * eig) @ Qm.T).unsqueeze(0)
    return Quadratic(A, torch.randn(1, n, generator=g, dtype=torch.float64)), torch.randn(1, n, generator=g,
                                                                                           dtype=torch.float64)


def _problems():
    out = [("rosenbrock4", Rosenbrock(4), torch.tensor([[-1.2, 1.0, 0.5, -0.3]], dtype=torch.float64)),
           ("rosenbrock100", Rosenbrock(100), torch.linspace(-1.5, 1.5, 100, dtype=torch.float64).unsqueeze(0)),
           ("rastrigin6", Rastrigin(6), torch.linspace(-4, 4, 6, dtype=torch.float64).unsqueeze(0))]
    for n, c in ((6, 30.0), (40, 1e3), (100, 1e4)):
        q, x0 = _quadratic(n, c)
        out.append((f"quadratic{n}", q, x0))
    starts = torch.tensor([[-1.5, 2.0], [2.5, -1.0], [0.3, 0.7]], dtype=torch.float64)
    for name in TEACHING_FUNCTIONS:
        out.append((name, teaching_function(name), starts))
    return out


def _runs(explicit_ctx, obj, x0, steps, net, **kw):
    with explicit_ctx:
        ref = run(LSR1Solver(model=net), obj, x0, steps, **kw)
    return ref, run(LSR1Solver(model=net), obj, x0, steps, **kw)


@pytest.mark.parametrize("name,obj,x0", _problems(), ids=[p[0] for p in _problems()])
def test_whole_runs_match_the_explicit_path(name, obj, x0, explicit):
    """The untrained default qn form, compact against explicit: the same iterates to rounding over the first steps
    — no further apart than the explicit path is from itself started 10⁻¹⁵ (relative) away — and, for runs that
    reach the tolerance, the same solved status, the same final f and evaluation counts within a few."""
    net = LSR1Net(LSR1Config.qn()).double()
    steps = 60
    ref, got = _runs(explicit, obj, x0, steps, net, gtol=1e-8)
    with explicit:
        nudged = run(LSR1Solver(model=net), obj, x0 * (1 + 1e-15), steps, gtol=1e-8)
    scale = ref.x.norm(dim=-1) + ref.x[:1].norm(dim=-1)  # ‖x_k‖ + ‖x_0‖ (some minimisers are at 0)
    rel = lambda a, b: ((a.x - b.x).norm(dim=-1) / scale).amax(-1)
    d_compact, d_nudged = rel(ref, got), rel(ref, nudged)
    assert float(d_compact[:10].max()) < 1e-9
    # rounding amplified: never far beyond what a 10⁻¹⁵ nudge of the start does to the explicit path itself
    k = min(30, steps)
    assert bool((d_compact[:k] <= 1e3 * d_nudged[:k] + 1e-9).all()), (d_compact[:k], d_nudged[:k])
    assert torch.equal(ref.converged, got.converged)
    for r in range(x0.shape[0]):
        if bool(ref.converged[r]):
            fs = ref.f[-1, r], got.f[-1, r]
            assert abs(float(fs[0] - fs[1])) <= 1e-8 * (abs(float(fs[0])) + 1e-8), (name, r, fs)
            ev = int(ref.total_evals()[r]), int(got.total_evals()[r])
            assert abs(ev[0] - ev[1]) <= max(3, 0.1 * ev[0]), (name, r, ev)
    assert not bool(got.diverged.any())


def test_marks_and_outputs_keep_their_meaning(explicit):
    """skipped / bfgs / restarted marks, the secant residual and the state's buffers mean what they meant: equal to
    the explicit path's on the first steps of a run that skips pairs (Rastrigin) and a quadratic."""
    net = LSR1Net(LSR1Config.qn()).double()
    x0 = torch.tensor([[-3.1, 2.2, 0.4, -1.7, 2.9, -0.6]], dtype=torch.float64)
    ref, got = _runs(explicit, Rastrigin(6), x0, 12, net)
    for key in ("skipped", "bfgs", "restarted", "safeguard"):
        assert torch.equal(ref.extras[key], got.extras[key]), key
    torch.testing.assert_close(got.extras["secant_residual"], ref.extras["secant_residual"], rtol=1e-6, atol=1e-7)
    assert bool(ref.extras["skipped"].any())  # the premise
    for a, b in zip(ref.operators[1:], got.operators[1:]):
        torch.testing.assert_close(b.dense(), a.dense(), rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(b.W, a.W, rtol=1e-7, atol=1e-9)


def test_diagonal_metric_runs_match(explicit):
    """With β > 0 the method runs in the metric's coordinates (the Gram recomputed each step)."""
    g = torch.Generator().manual_seed(4)
    n = 20
    scales = torch.logspace(-2, 2, n, dtype=torch.float64)
    A = torch.randn(40, n, generator=g, dtype=torch.float64) * scales
    obj = Quadratic((A.T @ A / 40 + 1e-3 * torch.eye(n, dtype=torch.float64)).unsqueeze(0),
                    torch.randn(1, n, generator=g, dtype=torch.float64))
    x0 = torch.randn(1, n, generator=g, dtype=torch.float64)
    net = LSR1Net(LSR1Config.qn(diag=1.5)).double()
    ref, got = _runs(explicit, obj, x0, 30, net)
    d = ((ref.x - got.x).norm(dim=-1) / ref.x.norm(dim=-1)).amax(-1)
    assert float(d[:10].max()) < 1e-9
    assert abs(float(ref.f[-1, 0] - got.f[-1, 0])) <= 1e-6 * (abs(float(ref.f[0, 0])) + 1)


def test_nonzero_heads_take_the_explicit_path():
    """A model whose generators' output is not zero never takes the compact path (bit for bit the explicit one)."""
    from lsr1_core.learned.qn import compact_applies
    net = LSR1Net(LSR1Config.qn()).double()
    U = torch.zeros(1, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        assert compact_applies(net, U)
        assert not compact_applies(net, U + 1e-3)
        net.vector_generator.fc2.bias.fill_(1e-3)
        assert not compact_applies(net, U)
    assert not compact_applies(LSR1Net(LSR1Config.qn()).double(), U)  # gradient enabled


def test_optimizer_state_round_trip_and_lazy_buffer():
    """LSR1Optimizer with the compact path: the saved state holds the buffer W (computed from the pairs on save),
    loads into a fresh optimizer that continues exactly as the original does."""
    torch.manual_seed(0)

    def make():
        model = torch.nn.Linear(6, 1).double()
        X = torch.randn(40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        y = X @ torch.arange(1.0, 7.0, dtype=torch.float64).unsqueeze(1)
        return model, X, y

    model, X, y = make()
    opt = LSR1Optimizer(model.parameters(), model=LSR1Net(LSR1Config.qn(memory=4)).double(), tolerance_grad=None,
                        tolerance_change=None)

    def closure():
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(6):
        opt.step(closure)
    sd = opt.state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    W = back["state"][0]["W"]
    assert type(W) is torch.Tensor and W.shape[1] == 4 and bool(torch.isfinite(W).all())
    assert float(W.abs().max()) > 0
    # the saved W is the explicit rebuild of the saved pairs (u = 0), to rounding
    st = back["state"][0]
    W_ex = rebuild(st["P"], st["Q"], torch.zeros_like(st["P"]), st["gamma"], 1e-8, "bfgs")
    # (the saved γ is the step's; W was built with it)
    torch.testing.assert_close(W, W_ex, rtol=1e-7, atol=1e-9)
    model2, _, _ = make()
    model2.load_state_dict(model.state_dict())
    opt2 = LSR1Optimizer(model2.parameters(), model=LSR1Net(LSR1Config.qn(memory=4)).double(), tolerance_grad=None,
                         tolerance_change=None)
    opt2.load_state_dict(back)

    def closure2():
        opt2.zero_grad()
        loss = ((model2(X) - y) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
        opt2.step(closure2)
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_pair_buffer_never_rewrites_a_slot_a_view_can_see():
    """States kept from earlier steps (e.g. the operators of a trace) keep their pairs: a second proposal from the
    same state writes a new buffer instead of the slot the first one used."""
    from lsr1_core.learned.compact import append_pair
    B, N = 1, 5
    P = torch.zeros(B, 0, N, dtype=torch.float64)
    Q = P.clone()
    mk = lambda v: torch.full((B, N), float(v), dtype=torch.float64)
    base, s, m, _ = append_pair(P, Q, mk(1), mk(2), mk(9), memory=3)
    P1, Q1 = base[:, s:s + m, 0], base[:, s:s + m, 1]
    base2, s2, m2, _ = append_pair(P1, Q1, mk(3), mk(4), mk(9), memory=3)
    assert base2 is base and m2 == 2
    # a second proposal from the first state: its slot is taken, so a new buffer
    base3, s3, _, _ = append_pair(P1, Q1, mk(5), mk(6), mk(9), memory=3)
    assert base3 is not base
    assert float(base[:, s2 + 1, 0].max()) == 3.0 and float(base3[:, s3 + 1, 0].max()) == 5.0
    # the window slides (oldest dropped) and the buffer is replaced when full, the views staying valid
    P2, Q2 = base2[:, s2:s2 + m2, 0], base2[:, s2:s2 + m2, 1]
    for k in range(10):
        P2, Q2 = P2[:, -2:], Q2[:, -2:]
        b, s, m, _ = append_pair(P2, Q2, mk(10 + k), mk(20 + k), mk(9), memory=3)
        old = P2.clone()
        P2, Q2 = b[:, s:s + m, 0], b[:, s:s + m, 1]
        torch.testing.assert_close(P2[:, :-1], old)
        assert float(P2[:, -1].max()) == 10 + k


def test_the_kept_gram_matrix_is_the_window_s():
    """The buffer keeps the inner products of its slots; over a run of appends (the window sliding, the buffer
    replaced when full) the Gram matrix of the window and Z g equal those computed afresh."""
    from lsr1_core.learned.compact import append_pair, window_gram
    g = torch.Generator().manual_seed(5)
    B, N, memory = 2, 7, 3
    P = torch.zeros(B, 0, N, dtype=torch.float64)
    Q = P.clone()
    fresh_seen = 0
    for k in range(12):
        p, q, gr = (torch.randn(B, N, generator=g, dtype=torch.float64) for _ in range(3))
        P, Q = P[:, -(memory - 1):] if P.shape[1] else P, Q[:, -(memory - 1):] if Q.shape[1] else Q
        base, s, m, fresh = append_pair(P, Q, p, q, gr, memory)
        fresh_seen += fresh
        K, kg = window_gram(base, s, m, fresh)
        P, Q = base[:, s:s + m, 0], base[:, s:s + m, 1]
        Z = torch.stack([P, Q], 2).reshape(B, 2 * m, N)
        torch.testing.assert_close(K, Z @ Z.transpose(1, 2), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(kg, (Z @ gr.unsqueeze(-1)).squeeze(-1), rtol=1e-12, atol=1e-12)
    assert 1 < fresh_seen < 12  # both paths ran


@pytest.mark.parametrize("dtype,spread", [(torch.float64, 3e-6), (torch.float32, 5e-3)])
def test_nearly_dependent_differences_take_the_cholesky_qr_basis(dtype, spread):
    """A gradient difference within ~10⁻⁶ (float64) or ~10⁻² (float32) of the span of the others: too close for the
    Gram projector, far enough for the Cholesky-QR basis — which must give the explicit operator, to rounding (in
    float32: no further from the float64 operator than the explicit float32 one is, with margin)."""
    for seed in range(3):
        P, Q, gamma, g = random_pairs(seed, B=2, m=6, N=40)
        noise = torch.randn(2, 40, generator=g, dtype=torch.float64) / 40 ** 0.5
        Q[:, 3] = 0.7 * Q[:, 1] + spread * Q[:, 1].norm(dim=-1, keepdim=True) * noise
        u = torch.randn(2, 40, generator=g, dtype=torch.float64)
        cfg = LSR1Config.qn()
        ref = qn_operator(cfg, rebuild(P, Q, torch.zeros_like(P), gamma, cfg.skip_eps, cfg.fallback), P, Q,
                          gamma).matvec(u)
        P, Q, gamma, u = P.to(dtype), Q.to(dtype), gamma.to(dtype), u.to(dtype)
        ex = qn_operator(cfg, rebuild(P, Q, torch.zeros_like(P), gamma, cfg.skip_eps, cfg.fallback), P, Q, gamma)
        co = compact.operator_from_pairs(P, Q, gamma, cfg.skip_eps, cfg.fallback, cfg.h0, two_scale_complement)
        assert co._explicit and co._binv is not None  # the premise: the Cholesky-QR path
        def err(x, ref=ref):
            return float(((x.double() - ref).norm(dim=-1) / ref.norm(dim=-1)).max())
        if dtype == torch.float64:
            assert err(co.matvec(u)) < 1e-9
        else:
            assert err(co.matvec(u)) < 10 * err(ex.matvec(u)) + 1e-5


def test_saved_state_holds_only_its_own_pairs():
    """P and Q are views into the pair buffer; the optimizer's state dict holds copies of just their elements."""
    w = torch.nn.Parameter(torch.zeros(50, dtype=torch.float64))
    opt = LSR1Optimizer([w], model=LSR1Net(LSR1Config.qn(memory=4)).double(), tolerance_grad=None,
                        tolerance_change=None)
    A = torch.randn(30, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def closure():
        opt.zero_grad()
        loss = ((A @ w - 1) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert opt.state[w]["P"].untyped_storage().nbytes() > opt.state[w]["P"].numel() * 8  # the premise: a view
    sd = opt.state_dict()
    for key in ("P", "Q"):
        t = sd["state"][0][key]
        assert t.untyped_storage().nbytes() == t.numel() * 8
        assert torch.equal(t, opt.state[w][key])


def test_small_problems_and_cancellation_take_the_explicit_path(explicit, monkeypatch):
    """Fewer coordinates than stored vectors (the 2-D views) or too much cancellation among them: the step is the
    explicit path's, so the operators there are the explicit ones and the textbook secant residual stays at
    rounding where SR1 took the pair."""
    from lsr1_core.learned.model import LSR1Operator
    from lsr1_core.objectives import teaching_function
    obj = teaching_function("quadratic", cond=10.0, angle=30.0)
    net = LSR1Net(LSR1Config.qn()).double()
    x0 = torch.tensor([[-2.5, 1.5]], dtype=torch.float64)
    tr = run(LSR1Solver(model=net), obj, x0, 6)
    assert all(isinstance(op, LSR1Operator) for op in tr.operators[2:])
    for k in range(2):
        p, q = tr.x[k + 1] - tr.x[k], tr.g[k + 1] - tr.g[k]
        assert float((tr.operators[k + 1].matvec(q) - p).norm() / p.norm()) < 1e-12
    # with no cancellation allowed every step is explicit: the same iterates as the forced explicit path
    monkeypatch.setattr(compact, "AMPLIFICATION", 0.0)
    q100, x100 = _quadratic(100, 1e4)
    got = run(LSR1Solver(model=net), q100, x100, 15)
    assert all(isinstance(op, LSR1Operator) for op in got.operators[1:])
    with explicit:
        ref = run(LSR1Solver(model=net), q100, x100, 15)
    torch.testing.assert_close(got.x, ref.x, rtol=1e-12, atol=1e-12)


def test_float32_directions_stay_at_float32_accuracy():
    """float32 pairs: the Gram matrix's entries carry ~1e-6 relative error, which nearly dependent pairs (here the
    curvature probe's and the first steps') amplify; such steps are recomputed in float64. Every step's direction must
    be within float32 accuracy of the float64 explicit operator of the same pairs: at most 1e-3, typically 1e-5 (the
    float32 explicit path's own error here is ~1e-7–2e-3)."""
    n = 20_000
    g = torch.Generator().manual_seed(0)
    A = torch.randn(64, n, generator=g) / n ** 0.5
    b = torch.randn(64, generator=g)
    w = torch.nn.Parameter(torch.zeros(n))
    opt = LSR1Optimizer([w], model=LSR1Net(LSR1Config.qn()), tolerance_grad=None, tolerance_change=None)
    seen = []
    orig = compact.propose

    def spy(cfg, P, Q, p, q, gr, *a, **k):
        out = orig(cfg, P, Q, p, q, gr, *a, **k)
        if out is not None and gr.dtype == torch.float32:
            seen.append((out["P"].double().clone(), out["Q"].double().clone(), gr.double().clone(),
                         out["gamma"].double().clone(), out["d"].double().clone(), out["op"].dtype))
        return out

    def closure():
        opt.zero_grad()
        loss = ((A @ w - b) ** 2).mean() + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    compact.propose = spy
    try:
        for _ in range(30):
            opt.step(closure)
    finally:
        compact.propose = orig
    cfg = LSR1Config.qn()
    assert len(seen) >= 25 and any(s[5] == torch.float64 for s in seen) and any(s[5] == torch.float32 for s in seen)
    errs = []
    for P, Q, gr, gam, d, _ in seen:
        W = rebuild(P, Q, torch.zeros_like(P), gam, cfg.skip_eps, cfg.fallback)
        ref = qn_operator(cfg, W, P, Q, gam).matvec(gr)
        errs.append(float((d - ref).norm() / ref.norm()))
    # (without the float64 steps: errors up to ~0.3 on the steps after the probe, measured)
    assert max(errs) < 1e-3 and sorted(errs)[len(errs) // 2] < 1e-5, errs
