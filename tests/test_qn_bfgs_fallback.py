"""The qn form's BFGS fallback: a pair whose SR1 vector would make H indefinite enters H as a BFGS update."""
import pytest
import torch

from lsr1_core.errors import LSR1Error
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.learned.model import LSR1Operator
from lsr1_core.learned.qn import bfgs_rho, qn_operator, rebuild
from lsr1_core.objectives import Quadratic
from lsr1_core.solvers import run


def _dense_bfgs(H, p, q):
    rho = 1.0 / float(p @ q)
    V = torch.eye(len(p), dtype=H.dtype) - rho * torch.outer(q, p)
    return V.T @ H @ V + rho * torch.outer(p, p)


def test_interleaved_operator_matches_the_dense_recursion():
    """γI, then SR1 / BFGS / skipped updates in order: the two-loop matvec equals building H densely."""
    g = torch.Generator().manual_seed(0)
    N, gamma = 7, 0.3
    P = torch.randn(1, 4, N, generator=g, dtype=torch.float64)
    A = torch.randn(N, N, generator=g, dtype=torch.float64)
    A = A @ A.T + N * torch.eye(N, dtype=torch.float64)
    Q = P @ A  # convex quadratic: pᵀq > 0 for every pair
    H = gamma * torch.eye(N, dtype=torch.float64)
    W = torch.zeros(1, 4, N, dtype=torch.float64)
    rho = torch.zeros(1, 4, dtype=torch.float64)
    for i, kind in enumerate(["bfgs", "sr1", "bfgs", "skip"]):
        p, q = P[0, i], Q[0, i]
        if kind == "sr1":
            w = p - H @ q
            if float(w @ q) <= 0:  # make it a positive SR1 vector regardless: any v works for this identity
                w = p
            v = w / float(w @ q) ** 0.5
            W[0, i] = v
            H = H + torch.outer(v, v)
        elif kind == "bfgs":
            rho[0, i] = 1 / float(p @ q)
            H = _dense_bfgs(H, p, q)
    op = LSR1Operator(W, scale=torch.full((1, 1), gamma, dtype=torch.float64), bfgs=(P, Q, rho))
    torch.testing.assert_close(op.dense()[0], H, rtol=1e-10, atol=1e-12)
    y = torch.randn(1, N, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(y)[0], H @ y[0], rtol=1e-10, atol=1e-12)


def test_bfgs_fallback_satisfies_the_newest_secant_equation_and_stays_positive_definite():
    """Pairs from an indefinite quadratic: SR1 cannot use some positively; the fallback takes those with pᵀq > 0
    as BFGS updates, so H stays positive definite and H q = p holds for the newest pair it took."""
    g = torch.Generator().manual_seed(3)
    N = 6
    lam = torch.tensor([-2.0, -0.5, 0.3, 1.0, 4.0, 9.0], dtype=torch.float64)
    Qm, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    A = (Qm * lam) @ Qm.T
    P = torch.randn(1, 6, N, generator=g, dtype=torch.float64)
    Q = P @ A
    gamma = torch.full((1, 1), 0.05, dtype=torch.float64)
    U = torch.zeros_like(P)
    cfg = LSR1Config.qn(h0="envelope")
    W = rebuild(P, Q, U, gamma, cfg.skip_eps, "bfgs")
    rho = bfgs_rho(P, Q, W, cfg.skip_eps)
    assert bool((rho > 0).any())  # the premise: some pairs went to BFGS
    pq = (P * Q).sum(-1)
    assert not bool(((rho > 0) & (pq <= 0)).any())  # never from a pair without positive curvature
    op = qn_operator(cfg, W, P, Q, gamma)
    assert float(torch.linalg.eigvalsh(op.dense()).min()) > 0
    last = int((rho[0] > 0).nonzero().max())
    if last == P.shape[1] - 1 or not bool((W[0, last + 1:] != 0).any()):
        Hq = LSR1Operator(W[:, :last + 1], scale=gamma, bfgs=(P[:, :last + 1], Q[:, :last + 1], rho[:, :last + 1])).matvec(Q[:, last])
        torch.testing.assert_close(Hq, P[:, last], rtol=1e-9, atol=1e-12)
    skip = LSR1Config.qn(h0="envelope", fallback="skip")
    op_skip = qn_operator(skip, rebuild(P, Q, U, gamma, skip.skip_eps, "skip"), P, Q, gamma)
    assert op_skip.bfgs is None
    assert float(torch.linalg.eigvalsh(op_skip.dense()).min()) >= 0.999 * 0.05


def test_fallback_changes_nothing_where_sr1_never_skips():
    """On a convex quadratic with H₀ = γI ⪯ ∇²f⁻¹ SR1 takes every pair positively: both fallbacks give the
    same iterates (the equivalence with classical SR1 is tested in test_qn.py)."""
    g = torch.Generator().manual_seed(1)
    N = 6
    Qm, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    A = (Qm * torch.logspace(0, 1.5, N, dtype=torch.float64)) @ Qm.T
    q = Quadratic(A.unsqueeze(0), torch.randn(1, N, generator=g, dtype=torch.float64))
    x0 = torch.randn(1, N, generator=g, dtype=torch.float64)
    net = LSR1Net(LSR1Config.qn(h0="envelope", memory=8)).double()
    a = run(LSR1Solver(model=net), q, x0, 6)
    b = run(LSR1Solver(model=net.with_config(fallback="skip")), q, x0, 6)
    assert not a.extras["skipped"][1:].any()
    assert all(op is None or not bool((op.bfgs[2] > 0).any()) for op in a.operators)
    # the two matvecs (two-loop recursion, dense sum) round differently and SR1 amplifies rounding (~10³ per
    # step here), so the iterates agree to rounding for the first steps and to 1e-6 relative at the end
    torch.testing.assert_close(a.x[:4], b.x[:4], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.x, b.x, rtol=1e-6, atol=1e-4 * float(a.x.abs().max()))


class _L1Fit:
    """f(x) = mean |Ax − b| (non-smooth, like HMR's L1 reprojection error)."""
    def __init__(self, A, b):
        self.A, self.b = A, b
        self.dim = A.shape[-1]

    def value(self, x):
        return (x @ self.A.T - self.b).abs().mean(-1)

    def value_and_grad(self, x):
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            f = self.value(xx)
            (gr,) = torch.autograd.grad(f.sum(), xx)
        return f.detach(), gr


def test_bfgs_fallback_helps_on_a_nonsmooth_fit():
    """On an L1 regression (kinks make most SR1 pairs indefinite) the fallback lowers f further than skipping."""
    from lsr1_core.objectives.base import Objective

    class L1(_L1Fit, Objective):
        name = "l1_fit"

    g = torch.Generator().manual_seed(5)
    A = torch.randn(40, 12, generator=g, dtype=torch.float64)
    xs = torch.randn(12, generator=g, dtype=torch.float64)
    obj = L1(A, A @ xs + 0.01 * torch.randn(40, generator=g, dtype=torch.float64))
    x0 = torch.randn(8, 12, generator=g, dtype=torch.float64)
    net = LSR1Net(LSR1Config.qn()).double()
    fb = run(LSR1Solver(model=net), obj, x0, 40)
    sk = run(LSR1Solver(model=net.with_config(fallback="skip")), obj, x0, 40)
    assert not fb.diverged.any() and not sk.diverged.any()
    assert float(fb.f[-1].log10().mean()) < float(sk.f[-1].log10().mean()) - 0.3
    for op in fb.operators[1:]:
        if op is not None:
            assert float(op.eigvalsh().min()) > 0


def test_unknown_fallback_is_refused():
    with pytest.raises(LSR1Error, match="fallback"):
        LSR1Config.qn(fallback="damped")


def test_mlp_experiment_runs_and_lowers_the_loss(tmp_path):
    """experiments.qn_mlp (the "on your own model" check): both fallbacks lower a ReLU network's loss
    at every step and substantially overall, nothing becomes non-finite, evaluations are counted, and the CLI
    refuses nonsense.

    A ReLU network's training path depends on floating-point rounding, which differs between CPU instruction
    sets (``ATEN_CPU_CAPABILITY``), so only properties that hold on any CPU are asserted: the final loss of
    seed 0 after 40 steps was 0.33–0.34·start with the fallback and 0.48–0.57·start without it on AVX-512, AVX2
    and the default (no SIMD) kernels; the bound is 0.75·start. The safeguard accepts only steps that lower the
    loss, so the loss at the start of each step strictly decreases, whatever the rounding."""
    import math

    from lsr1_core.checkpoints import PRETRAINED_DIR
    from experiments import qn_mlp
    from lsr1_core.learned import LSR1Optimizer
    from lsr1_core.learned.io import load_model

    model, X, y = qn_mlp.problem(0)
    with torch.no_grad():
        start = float(((model(X) - y) ** 2).mean())
    for method in ("lsr1", "lsr1_skip"):
        r = qn_mlp.fit(method, 0, steps=40)
        assert math.isfinite(r["loss"]) and r["loss"] < 0.75 * start, (method, r, start)
        # one evaluation per step at least (the accepted point's is reused); the safeguard's trials are bounded
        assert 40 <= r["evals"] <= 40 * 30, (method, r)
    for fallback in ("bfgs", "skip"):
        model, X, y = qn_mlp.problem(0)
        net, _ = load_model(PRETRAINED_DIR / "qn_quadratic")
        opt = LSR1Optimizer(model.parameters(), model=net.with_config(fallback=fallback))

        def closure():
            opt.zero_grad()
            loss = ((model(X) - y) ** 2).mean()
            loss.backward()
            return loss

        losses = [float(opt.step(closure).detach()) for _ in range(40)]
        assert losses[0] == pytest.approx(start)
        assert all(b < a for a, b in zip(losses, losses[1:])), (fallback, losses)
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
        with torch.no_grad():
            assert float(((model(X) - y) ** 2).mean()) < min(losses)
    with pytest.raises(SystemExit):
        qn_mlp.main(["--seeds", "0", "--out", str(tmp_path)])


@pytest.mark.parametrize("fallback", ["skip", "bfgs"])
def test_vectorised_rebuild_equals_the_recursion(fallback):
    """rebuild() updates H_i q_j for all stored pairs at once; it must give the vectors that applying the operator
    of the first i pairs to q_i (the two-loop recursion) gives, pair by pair."""
    from lsr1_core.learned.qn import _partial, psd_sr1_vector

    g = torch.Generator().manual_seed(0)
    B, L, N = 5, 12, 9
    A = torch.randn(N, N, generator=g, dtype=torch.float64)
    A = A + A.T  # indefinite: many pairs are unusable for SR1
    P = torch.randn(B, L, N, generator=g, dtype=torch.float64)
    Q = P @ A + 0.3 * torch.randn(B, L, N, generator=g, dtype=torch.float64)
    U = 0.1 * torch.randn(B, L, N, generator=g, dtype=torch.float64)
    gamma = torch.rand(B, 1, generator=g, dtype=torch.float64) * 0.2
    fast = rebuild(P, Q, U, gamma, 1e-8, fallback)
    V = []
    for i in range(L):
        Wi = torch.stack(V, 1) if V else P[:, :0]
        rho = bfgs_rho(P[:, :i], Q[:, :i], Wi, 1e-8) if fallback == "bfgs" else None
        Hq = _partial(Wi, P[:, :i], Q[:, :i], rho, gamma).matvec(Q[:, i])
        V.append(psd_sr1_vector(P[:, i], Q[:, i], Hq, U[:, i], 1e-8)[0])
    torch.testing.assert_close(fast, torch.stack(V, 1), rtol=1e-10, atol=1e-12)
    assert bool((fast.norm(dim=-1) == 0).any()) and bool((fast.norm(dim=-1) > 0).any())
    if fallback == "bfgs":
        assert bool((bfgs_rho(P, Q, fast, 1e-8) > 0).any())
