import pytest
import torch

from lsr1_core.errors import LSR1Error, NonFiniteError
from lsr1_core.objectives import Himmelblau, Quadratic, Rosenbrock, quadratic_split
from lsr1_core.solvers import make_solver, run
from lsr1_core.solvers.adahessian import hutchinson_diagonal
from lsr1_core.solvers.lbfgs import strong_wolfe
from lsr1_core.solvers.sr1 import sr1_update


def _torch_lbfgs(obj, x0, steps, **kw):
    xx = x0[0].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([xx], max_iter=1, tolerance_grad=0, tolerance_change=0, **kw)

    def closure():
        opt.zero_grad()
        loss = obj.value(xx.unsqueeze(0)).sum()
        loss.backward()
        return loss

    out = []
    for _ in range(steps):
        opt.step(closure)
        out.append(xx.detach().clone())
    return torch.stack(out)


def test_lbfgs_matches_torch_without_line_search():
    r = Rosenbrock(10)
    x0 = torch.zeros(1, 10, dtype=torch.float64)
    ref = _torch_lbfgs(r, x0, 15, lr=0.05, history_size=5, line_search_fn=None)
    t = run(make_solver("lbfgs", memory=5, lr=0.05), r, x0, 15)
    assert torch.allclose(t.x[1:, 0], ref, atol=1e-12)


def test_lbfgs_matches_torch_with_strong_wolfe_on_early_steps():
    r = Rosenbrock(10)
    x0 = torch.linspace(-1.5, 1.5, 10, dtype=torch.float64).unsqueeze(0)
    ref = _torch_lbfgs(r, x0, 6, lr=1.0, history_size=8, line_search_fn="strong_wolfe")
    t = run(make_solver("lbfgs", memory=8, line_search="strong_wolfe"), r, x0, 6)
    # same bracketing and cubic interpolation, so the same trial steps and iterates
    assert torch.allclose(t.x[1:, 0], ref, atol=1e-9)


def test_strong_wolfe_conditions_hold_for_accepted_steps():
    r = Rosenbrock(6)
    g = torch.Generator().manual_seed(0)
    x = 4 * torch.rand(5, 6, generator=g, dtype=torch.float64) - 2
    f, gr = r.value_and_grad(x)
    d = gr / gr.norm(dim=-1, keepdim=True)
    t, f_new, g_new, _, ok = strong_wolfe(r, x, d, f, gr, torch.full((5,), 1.0, dtype=torch.float64))
    assert ok.all()
    dphi0 = -(gr * d).sum(-1)
    dphi = -(g_new * d).sum(-1)
    assert (f_new <= f + 1e-4 * t * dphi0).all()
    assert (dphi.abs() <= 0.9 * dphi0.abs() + 1e-12).all()
    assert torch.allclose(f_new, r.value(x - t.unsqueeze(-1) * d))


def test_lbfgs_with_exact_line_search_solves_a_quadratic_in_n_steps():
    q, x0 = quadratic_split("test")
    t = run(make_solver("lbfgs", memory=10, line_search="exact"), q, x0, 12)
    assert ((t.f[-1] - q.min_value()).abs() < 1e-8).all()


def test_sr1_update_satisfies_the_secant_equation():
    torch.manual_seed(0)
    B = torch.eye(4, dtype=torch.float64).expand(3, 4, 4).clone()
    for _ in range(3):
        p, q = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
        B = sr1_update(B, p, q)
        assert torch.allclose(torch.einsum("bij,bj->bi", B, q), p, atol=1e-9)
        assert torch.allclose(B, B.transpose(1, 2))


def test_limited_memory_sr1_operator_satisfies_latest_secant_pair():
    q, x0 = quadratic_split("test")
    s = make_solver("sr1", memory=5)
    s.reset(q, x0)
    for _ in range(4):
        s.step(q)
    op = s.operator()
    p, qq = s.state["P"][:, -1], s.state["Q"][:, -1]
    assert torch.allclose(op.matvec(qq), p, atol=1e-8)
    assert torch.allclose(op.dense(), op.dense().transpose(1, 2))


def test_sr1_goes_indefinite_and_uphill_on_himmelblau():
    f = Himmelblau()
    t = run(make_solver("sr1"), f, torch.tensor([[-0.5, -0.5]], dtype=torch.float64), 10)
    assert (t.extras["min_eig"] < 0).any()
    g_dot_d = (t.g[:-1] * t.d).sum(-1)
    assert (g_dot_d < 0).any()  # an ascent direction: x − d moves uphill to first order


def test_sr1_converges_on_a_quadratic():
    q, x0 = quadratic_split("test")
    t = run(make_solver("sr1", memory=12), q, x0, 14)
    assert ((t.f[-1] - q.min_value()) < 1e-6).all()


def test_hutchinson_estimate_approaches_the_true_diagonal():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(8, 8, generator=g, dtype=torch.float64)
    H = A.T @ A + torch.eye(8, dtype=torch.float64)
    q = Quadratic(H)
    x = torch.zeros(1, 8, dtype=torch.float64)
    est = hutchinson_diagonal(q, x, samples=4000, generator=torch.Generator().manual_seed(1))
    rel = (est[0] - torch.diagonal(H)).abs() / torch.diagonal(H)
    assert rel.max() < 0.15 and rel.mean() < 0.06
    small = hutchinson_diagonal(q, x, samples=4, generator=torch.Generator().manual_seed(1))
    assert (small[0] - torch.diagonal(H)).abs().mean() > (est[0] - torch.diagonal(H)).abs().mean()


def test_adahessian_and_adam_and_gd_lower_a_quadratic():
    q, x0 = quadratic_split("test")
    for name, lr in (("adahessian", 0.3), ("adam", 0.3), ("gd", 1.0)):
        t = run(make_solver(name, lr=lr), q, x0, 30)
        assert (t.f[-1] < t.f[0]).float().mean() > 0.9, name


def test_bad_solver_settings_and_inputs():
    for name, kw, msg in (("lbfgs", {"memory": 0}, "memory"), ("lbfgs", {"line_search": "x"}, "line_search"),
                          ("sr1", {"memory": 0}, "memory"), ("gd", {"lr": -1.0}, "lr"),
                          ("adahessian", {"samples": 0}, "samples"), ("adam", {"lr": float("nan")}, "lr")):
        with pytest.raises(LSR1Error, match=msg):
            make_solver(name, **kw)
    q, x0 = quadratic_split("test")
    x0 = x0.clone()
    x0[0, 0] = float("inf")
    with pytest.raises(NonFiniteError):
        run(make_solver("lbfgs"), q, x0, 3)


def test_divergence_is_reported_in_the_trace():
    q, x0 = quadratic_split("test")
    t = run(make_solver("gd", lr=1e6), q, x0, 200)
    assert t.diverged.all()
    assert all("blew up" in r for r in t.reason)  # caught while still finite, at the first step past 1e8×
    assert (t.diverged_at <= 2).all()
    assert torch.isfinite(t.f).all()
    t = run(make_solver("gd", lr=1e6), q, x0, 200, blowup=None)  # without the bound: when it turns non-finite
    assert t.diverged.all() and all("non-finite" in r for r in t.reason)
    assert torch.isfinite(t.f).all()


def test_tune_lr_picks_the_best_finite_rate():
    from lsr1_core.solvers.tuning import tune_lr
    q, x0 = quadratic_split("test")
    best, table = tune_lr("gd", [(q, x0)], steps=20, grid=[0.5, 1.0, 2.5, 1e20])
    assert table[1e20] == float("inf")  # diverges
    assert best == 2.5 and table[2.5] < table[1.0] < table[0.5]
