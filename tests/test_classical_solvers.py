"""Classical baselines: L-BFGS (against torch.optim.LBFGS), limited-memory SR1, AdaHessian, lr tuning."""
import math

import pytest
import torch

from lsr1_core.errors import LSR1Error, NonFiniteError
from lsr1_core.objectives import DiagonalQuadratic, Himmelblau, Quadratic, Rastrigin, Rosenbrock, quadratic_split
from lsr1_core.operators import LBFGSInverse
from lsr1_core.solvers import make_solver, run
from lsr1_core.solvers.adahessian import AdaHessian, hutchinson_diagonal
from lsr1_core.solvers.lbfgs import strong_wolfe
from lsr1_core.solvers.sr1 import LimitedMemorySR1, sr1_update
from lsr1_core.solvers.tuning import LR_GRIDS, tune_lr, tune_lr_per_family

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------
# L-BFGS
# ---------------------------------------------------------------------------------------------------------

def _torch_lbfgs(obj, x0, steps, **kw):
    """Iterates of torch.optim.LBFGS, one iteration per .step() call, plus the line-search evaluations of
    each iteration. max_eval=26 gives its strong-Wolfe search max_ls = 25 (each .step() spends one
    evaluation at its start, so with the default max_eval the search would get no budget at all)."""
    xx = x0[0].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([xx], max_iter=1, max_eval=26, tolerance_grad=-1.0, tolerance_change=0.0, **kw)

    def closure():
        opt.zero_grad()
        loss = obj.value(xx.unsqueeze(0)).sum()
        loss.backward()
        return loss

    xs, ls_evals = [], []
    for _ in range(steps):
        before = opt.state[xx].get("func_evals", 0)
        opt.step(closure)
        xs.append(xx.detach().clone())
        ls_evals.append(opt.state[xx]["func_evals"] - before - 1)
    return torch.stack(xs), ls_evals


def _random_quadratic(n=10, seed=3):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=F64)
    H = A.T @ A + 0.1 * torch.eye(n, dtype=F64)
    b = torch.randn(n, generator=g, dtype=F64)
    return Quadratic(H, b), torch.randn(1, n, generator=g, dtype=F64)


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
def test_lbfgs_iterates_match_torch_optim_lbfgs(problem, line_search):
    if problem == "quadratic":
        obj, x0 = _random_quadratic()
        lr = 0.1
    else:
        obj, x0 = Rosenbrock(10), torch.linspace(-1.5, 1.5, 10, dtype=F64).unsqueeze(0)
        lr = 0.1 if line_search else 0.05  # without a line search lr = 1 blows up on Rosenbrock
    steps = 12  # > history, so dropping the oldest pair is exercised too
    ref, ref_evals = _torch_lbfgs(obj, x0, steps, lr=lr, history_size=5, line_search_fn=line_search)
    t = run(make_solver("lbfgs", memory=5, lr=lr, line_search=line_search), obj, x0, steps)
    err = (t.x[1:, 0] - ref).abs().max()
    assert err < 1e-9, f"max deviation from torch.optim.LBFGS {err:.2e}"
    assert float(t.f[-1, 0]) < 0.5 * float(t.f[0, 0])  # and it actually optimised something
    if line_search:
        assert t.evals.tolist() == ref_evals  # the same number of evaluations in every line search
        assert max(ref_evals) > 1  # the bracketing/zoom paths were exercised, not just the first trial


def test_lbfgs_batched_line_search_matches_torch_row_by_row():
    r = Rosenbrock(10)
    g = torch.Generator().manual_seed(0)
    X0 = 4 * torch.rand(4, 10, generator=g, dtype=F64) - 2
    t = run(make_solver("lbfgs", memory=4, lr=3.0, line_search="strong_wolfe"), r, X0, 15)
    for b in range(4):
        ref, _ = _torch_lbfgs(r, X0[b:b + 1], 15, lr=3.0, history_size=4, line_search_fn="strong_wolfe")
        assert (t.x[1:, b] - ref).abs().max() < 1e-8, b
    # rows had different searches: the batched step lengths differ between rows
    assert (t.alpha[:, :, 0].std(dim=1) > 0).any()


def test_lbfgs_exact_line_search_solves_a_quadratic_in_n_steps():
    q, x0 = quadratic_split("test")  # 32 quadratics, N = 10, condition number ≤ 1000
    n = x0.shape[1]
    t = run(make_solver("lbfgs", memory=n, line_search="exact"), q, x0, n + 2)
    gap = t.f - q.min_value()
    assert (gap[n + 2] < 1e-8).all(), gap[n + 2].max()
    assert (gap[n // 2] > 1e-6).any()  # not trivially solved early: it needs about N steps
    assert isinstance(t.operators[-1], LBFGSInverse)


def test_strong_wolfe_conditions_hold_on_rosenbrock_steps():
    r = Rosenbrock(10)
    g = torch.Generator().manual_seed(1)
    X0 = 4 * torch.rand(8, 10, generator=g, dtype=F64) - 2
    t = run(make_solver("lbfgs", memory=8, line_search="strong_wolfe"), r, X0, 20)
    c1, c2 = 1e-4, 0.9
    gd0 = (t.g[:-1] * t.d).sum(-1)  # gᵀd > 0 for descent (x_new = x − α d)
    gd1 = (t.g[1:] * t.d).sum(-1)
    alpha = t.alpha[:, :, 0]
    armijo = t.f[1:] <= t.f[:-1] - c1 * alpha * gd0 + 1e-12
    curvature = gd1.abs() <= c2 * gd0.abs() + 1e-12
    claimed = t.extras["wolfe"].bool()
    assert (armijo & curvature)[claimed].all()
    # before convergence (gradient not tiny) every step satisfied both conditions
    active = t.g[:-1].norm(dim=-1) > 1e-6
    assert claimed[active].all()
    assert active.float().mean() > 0.5


def test_strong_wolfe_function_on_a_batch_from_gradient_directions():
    r = Rosenbrock(6)
    g = torch.Generator().manual_seed(0)
    x = 4 * torch.rand(5, 6, generator=g, dtype=F64) - 2
    f, gr = r.value_and_grad(x)
    d = gr / gr.norm(dim=-1, keepdim=True)
    t, f_new, g_new, evals, ok = strong_wolfe(r, x, d, f, gr, torch.full((5,), 1.0, dtype=F64))
    assert ok.all() and 1 <= evals <= 25
    dphi0, dphi = (gr * d).sum(-1), (g_new * d).sum(-1)
    assert (f_new <= f - 1e-4 * t * dphi0).all()
    assert (dphi.abs() <= 0.9 * dphi0.abs()).all()
    assert torch.allclose(f_new, r.value(x - t.unsqueeze(-1) * d))
    assert torch.allclose(g_new, r.grad(x - t.unsqueeze(-1) * d))


@pytest.mark.parametrize("objective, c2, max_evals, tol", [
    ("rosenbrock", 0.9, 25, 1e-9), ("rosenbrock", 0.01, 25, 1e-9), ("rastrigin", 0.01, 25, 1e-9),
    ("rastrigin", 0.1, 3, 1e-9), ("rastrigin", 0.01, 25, 1e-2), ("rosenbrock", 0.01, 25, 0.3)])
def test_strong_wolfe_matches_torch_line_search_row_by_row(objective, c2, max_evals, tol):
    """The batched search against torch's own (private) _strong_wolfe on many one-dimensional searches:
    initial steps from 1e-3 (long extrapolation) to 1e3 (long zoom), a tight curvature constant (many
    zoom steps), a small evaluation budget and a coarse bracket tolerance (the early exits)."""
    torch_sw = pytest.importorskip("torch.optim.lbfgs")._strong_wolfe
    r = Rosenbrock(10) if objective == "rosenbrock" else Rastrigin(10)
    g = torch.Generator().manual_seed(4)
    B = 48
    x = 4 * torch.rand(B, 10, generator=g, dtype=F64) - 2
    f, gr = r.value_and_grad(x)
    d = gr + gr.norm(dim=-1, keepdim=True) * torch.randn(B, 10, generator=g, dtype=F64) / 4
    d = torch.where(((gr * d).sum(-1) > 0).unsqueeze(-1), d, gr)
    d = d / d.norm(dim=-1, keepdim=True)
    t0 = torch.logspace(-3, 3, B, dtype=F64)
    t, f_new, g_new, evals, ok = strong_wolfe(r, x, d, f, gr, t0, c2=c2, max_evals=max_evals, tol_change=tol)
    counts = []
    for b in range(B):
        def obj_func(xb, tb, db):
            fb, gb = r.value_and_grad((xb + tb * db).unsqueeze(0))
            return float(fb[0]), gb[0]
        f_ref, g_ref, t_ref, n_ref = torch_sw(obj_func, x[b], float(t0[b]), -d[b], float(f[b]), gr[b],
                                               -(gr[b] * d[b]).sum(), c2=c2, tolerance_change=tol,
                                               max_ls=max_evals - 1)
        t_ref = float(t_ref)
        assert abs(float(t[b]) - t_ref) <= 1e-10 * max(1.0, t_ref), (b, float(t[b]), t_ref)
        assert abs(float(f_new[b]) - f_ref) <= 1e-10 * max(1.0, abs(f_ref))
        assert torch.allclose(g_new[b], g_ref, rtol=1e-8, atol=1e-8)
        counts.append(n_ref)
    assert evals == max(counts)  # the batch runs until its slowest row is done
    assert len(set(counts)) > 1  # rows really needed different numbers of evaluations


# ---------------------------------------------------------------------------------------------------------
# SR1
# ---------------------------------------------------------------------------------------------------------

def test_sr1_update_dense_is_symmetric_and_satisfies_the_secant_equation():
    g = torch.Generator().manual_seed(0)
    H = torch.eye(4, dtype=F64).expand(3, 4, 4).clone()
    for _ in range(3):
        p, q = torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
        H_new = sr1_update(H, p, q)
        assert torch.allclose(torch.einsum("bij,bj->bi", H_new, q), p, atol=1e-10)
        assert torch.equal(H_new, H_new.transpose(1, 2))
        assert torch.linalg.matrix_rank(H_new - H).eq(1).all()  # a rank-one change
        H = H_new
    # the skip rule: a pair that already satisfies the secant equation (w = 0) leaves H unchanged
    q = torch.randn(3, 4, generator=g, dtype=F64)
    assert torch.equal(sr1_update(H, torch.einsum("bij,bj->bi", H, q), q), H)


def test_sr1_operator_matches_dense_replay_and_latest_secant_pair():
    r = Rosenbrock(6)
    x0 = torch.tensor([[-1.2, 1.0, -0.5, 0.3, 0.8, -1.0], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]], dtype=F64)
    s = LimitedMemorySR1(memory=4, lr=0.1, line_search="armijo")
    s.reset(r, x0)
    checked = 0
    for k in range(10):
        s.step(r)
        op = s.operator()
        P, Q, gamma = s.state["P"], s.state["Q"], s.state["gamma"]
        accepted = op.c[:, -1] != 0
        if k == 0:  # a lone pair with γ = pᵀq/qᵀq from itself: w = p − γq ⟂ q, so it is skipped
            assert not accepted.any()
            continue
        # dense replay of the stored pairs from H0 = γI with the textbook update
        H = gamma.view(-1, 1, 1) * torch.eye(6, dtype=F64).expand(2, 6, 6)
        for i in range(P.shape[1]):
            H = sr1_update(H, P[:, i], Q[:, i])
        M = op.dense()
        assert torch.allclose(M, H, rtol=1e-8, atol=1e-8 * H.abs().max())
        # secant equation for the newest pair, exactly (to round-off), wherever it was accepted
        p, q = P[:, -1], Q[:, -1]
        w = p - torch.einsum("bij,bj->bi", M, q)
        assert (w.norm(dim=-1) <= 1e-8 * p.norm(dim=-1))[accepted].all()
        checked += int(accepted.sum())
    assert checked >= 15 and s.state["P"].shape[1] == 4  # nearly all 18 later updates accepted; memory kept


def test_sr1_goes_indefinite_and_uphill_on_himmelblau():
    f = Himmelblau()
    t = run(make_solver("sr1", memory=8), f, torch.tensor([[-0.5, -0.5]], dtype=F64), 10)
    min_eig, descent = t.extras["min_eig"][:, 0], t.extras["descent"][:, 0]
    uphill = [k for k in range(t.steps) if min_eig[k] < -1e-3 and descent[k] == 0]
    assert uphill, "expected an indefinite H with an ascent direction"
    k = uphill[0]
    M = t.operators[k].dense()[0]
    assert torch.linalg.eigvalsh(M)[0] < 0  # independently: H is indefinite
    assert float(t.g[k, 0] @ t.d[k, 0]) < 0  # x − d moves uphill to first order
    assert torch.allclose(t.d[k, 0], M @ t.g[k, 0])  # and the direction really is H g, not "fixed"


def test_sr1_converges_on_quadratics_in_about_n_steps():
    q, x0 = quadratic_split("test")
    n = x0.shape[1]
    t = run(make_solver("sr1", memory=n + 2), q, x0, n + 2)
    gap = t.f - q.min_value()
    assert (gap[n + 2] < 1e-8).all(), gap[n + 2].max()
    assert (gap[n - 2] > 1e-3).any()  # the quasi-Newton model needs about N pairs


def test_sr1_armijo_only_takes_decreasing_steps():
    r = Rosenbrock(10)
    g = torch.Generator().manual_seed(2)
    X0 = 4 * torch.rand(4, 10, generator=g, dtype=F64) - 2
    t = run(make_solver("sr1", line_search="armijo"), r, X0, 30)
    assert (t.f[1:] <= t.f[:-1]).all()
    assert (t.f[-1] < 0.1 * t.f[0]).all()
    assert (t.evals > 1).all()


# ---------------------------------------------------------------------------------------------------------
# AdaHessian
# ---------------------------------------------------------------------------------------------------------

def test_hutchinson_estimate_approaches_the_true_diagonal():
    g = torch.Generator().manual_seed(0)
    n = 8
    A = torch.randn(n, n, generator=g, dtype=F64)
    H = A @ A.T + n * torch.eye(n, dtype=F64)
    off = H - torch.diag(torch.diagonal(H))
    assert off.norm() > 0.4 * torch.diagonal(H).norm()  # genuinely non-diagonal
    q = Quadratic(H)
    x = torch.randn(1, n, generator=g, dtype=F64)
    diag = torch.diagonal(H)
    est = hutchinson_diagonal(q, x, samples=2000, generator=torch.Generator().manual_seed(1))
    rel = (est[0] - diag).norm() / diag.norm()
    assert rel < 0.05
    few = hutchinson_diagonal(q, x, samples=2, generator=torch.Generator().manual_seed(1))
    assert (few[0] - diag).norm() / diag.norm() > rel  # more probes, better estimate
    again = hutchinson_diagonal(q, x, samples=2000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(est, again)  # seeded → reproducible
    # for a diagonal Hessian every Rademacher probe is exact: z ⊙ (h ⊙ z) = h
    h = torch.tensor([1.0, 10.0, 100.0], dtype=F64)
    est1 = hutchinson_diagonal(DiagonalQuadratic(h), torch.zeros(2, 3, dtype=F64), 1, torch.Generator().manual_seed(0))
    assert torch.allclose(est1, h.expand(2, 3))


def test_adahessian_lowers_a_quadratic_and_is_reproducible():
    q, x0 = quadratic_split("test")  # 32 quadratics, N = 10, condition numbers up to 1000
    t = run(AdaHessian(lr=0.1, n_samples=4, seed=5), q, x0, 100)
    ratio = (t.f[-1] - q.min_value()) / (t.f[0] - q.min_value())
    assert (ratio < 0.95).all() and ratio.median() < 0.7, ratio
    assert t.evals.eq(5).all()  # one gradient and four Hessian-vector products per step
    # one probe per step is noisier but still lowers (nearly) every problem
    t1 = run(make_solver("adahessian", lr=0.1, seed=5), q, x0, 100)
    assert (t1.f[-1] < t1.f[0]).float().mean() >= 0.9
    t2 = run(make_solver("adahessian", lr=0.1, seed=5), q, x0, 100)
    assert torch.equal(t1.x, t2.x)  # seeded → reproducible
    t3 = run(make_solver("adahessian", lr=0.1, seed=6), q, x0, 100)
    assert not torch.equal(t1.x, t3.x)
    # the operator is diag(1/(√v̂ + ε)); at step 1, m̂ = g and v̂ = D², so d = g / (|D| + ε)
    op, D = t1.operators[0], t1.extras["hess_diag"][0]
    assert torch.allclose(op.diag, 1.0 / (D + 1e-8))
    assert torch.allclose(op.matvec(t1.g[0]), t1.d[0])


# ---------------------------------------------------------------------------------------------------------
# errors, divergence, tuning
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, words", [
    ("lbfgs", {"memory": 0}, "memory"),
    ("lbfgs", {"memory": 2.5}, "memory"),
    ("lbfgs", {"lr": -1.0}, "lr"),
    ("lbfgs", {"lr": float("nan")}, "lr"),
    ("lbfgs", {"line_search": "wolfe"}, "line_search"),
    ("lbfgs", {"first_step": "big"}, "first_step"),
    ("sr1", {"memory": 0}, "memory"),
    ("sr1", {"lr": -0.5}, "lr"),
    ("sr1", {"line_search": "strong_wolfe"}, "line_search"),
    ("sr1", {"init_scale": -1.0}, "init_scale"),
    ("adahessian", {"lr": 0.0}, "lr"),
    ("adahessian", {"n_samples": 0}, "n_samples"),
    ("adahessian", {"hessian_power": 2.0}, "hessian_power"),
])
def test_bad_settings_raise_clear_errors(name, kwargs, words):
    with pytest.raises(LSR1Error, match=words):
        make_solver(name, **kwargs)


@pytest.mark.parametrize("name", ["lbfgs", "sr1", "adahessian"])
def test_non_finite_start_is_rejected(name):
    q, x0 = quadratic_split("test")
    x0 = x0.clone()
    x0[3, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"NaN.*\[3\]"):
        run(make_solver(name), q, x0, 3)


@pytest.mark.parametrize("name, kwargs", [("lbfgs", {"lr": 1e300}), ("sr1", {"lr": 1e30}),
                                          ("adahessian", {"lr": 1e200})])
def test_divergence_is_recorded_not_returned_as_nan(name, kwargs):
    r = Rosenbrock(10)
    x0 = torch.full((2, 10), 0.5, dtype=F64)
    t = run(make_solver(name, **kwargs), r, x0, 10)
    assert (t.diverged_at >= 1).all()
    # a huge step is caught either as non-finite or, earlier, as a finite blow-up (run()'s 1e8 bound)
    assert all(("non-finite" in why) or ("blew up" in why) for why in t.reason)
    assert torch.isfinite(t.f).all() and torch.isfinite(t.x).all()


def test_tune_lr_picks_a_finite_rate_and_scores_divergence_as_inf():
    q, x0 = quadratic_split("test", size=4)
    grid = [1e-3, 1e-2, 1e-1, 1.0, 1e200]  # Adam moves about lr per step: 1e200 overflows f
    best, table = tune_lr("adam", [(q, x0)], grid=grid, steps=30)
    assert table[1e200] == math.inf
    assert best is not None and math.isfinite(table[best])
    assert table[best] == min(table.values()) and best < 1e200
    assert table[best] < table[1e-3]  # the smallest rate barely moves in 30 steps
    # a rate that diverges for every grid point gives None
    none, tab = tune_lr("gd", (q, x0), grid=[1e10, 1e20], steps=50)
    assert none is None and all(v == math.inf for v in tab.values())
    # per family, and every default grid is log-spaced
    fam = tune_lr_per_family("gd", {"quad": [(q, x0)]}, grid=[0.01, 0.1], steps=10)
    assert fam["quad"][0] == 0.1
    for name, g in LR_GRIDS.items():
        ratios = [b / a for a, b in zip(g, g[1:])]
        assert all(abs(r - ratios[0]) < 1e-9 * ratios[0] for r in ratios) and ratios[0] > 1, name


def test_lbfgs_history_is_a_deprecated_alias_of_memory():
    q, x0 = quadratic_split("test")
    with pytest.warns(DeprecationWarning, match="memory="):
        old = make_solver("lbfgs", history=3, line_search="strong_wolfe")
    assert old.memory == 3
    a = run(old, q, x0, 6)
    b = run(make_solver("lbfgs", memory=3, line_search="strong_wolfe"), q, x0, 6)
    assert torch.equal(a.x, b.x)
    with pytest.raises(LSR1Error, match="memory"):
        make_solver("lbfgs", memory=True)
