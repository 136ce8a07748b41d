"""LODO: the preconditioner's structure, the hypergradient, convergence, errors, batching, the torch wrapper."""
import math

import pytest
import torch

from lsr1_core.errors import LSR1Error
from lsr1_core.objectives import Quadratic
from lsr1_core.objectives.lodo_tasks import LODORosenbrock, NoisyQuadraticBowl, run_nonstationary
from lsr1_core.solvers import make_solver, run
from lsr1_core.solvers.lodo import LODO, LODOOperator, LODOOptimizer, hidden_width

torch.set_num_threads(1)
DT = torch.float64


def _quadratic(n, B=1, seed=0, lo=1e-2, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    Hs, bs = [], []
    for _ in range(B):
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
        lam = torch.logspace(math.log10(lo), math.log10(hi), n, dtype=DT)
        Hs.append((Q * lam) @ Q.T)
        bs.append(torch.randn(n, generator=g, dtype=DT))
    return Quadratic(torch.stack(Hs), torch.stack(bs))


@pytest.mark.parametrize("n", [5, 7])
def test_preconditioner_is_minus_lr_identity_at_start_and_nsd_later(n):
    assert hidden_width(n) % 4 == 0 and hidden_width(n) >= 2 * n
    obj = _quadratic(n)
    solver = LODO(lr=0.7, meta_lr=1e-2, seed=3)
    x0 = torch.randn(1, n, dtype=DT)
    tr = run(solver, obj, x0, 0)
    P = solver.operator().dense()[0]
    G = -P  # LODO's step matrix
    assert torch.allclose(G, -0.7 * torch.eye(n, dtype=DT), atol=1e-12)
    tr = run(solver, obj, x0, 40)
    assert tr.diverged_at.item() == -1
    G = -solver.operator().dense()[0]
    assert not torch.allclose(G, -0.7 * torch.eye(n, dtype=DT), atol=1e-3)  # it has learned something
    assert torch.allclose(G, G.T, atol=1e-12)
    assert torch.linalg.eigvalsh(G).max().item() <= 1e-12
    # The operator recorded for each step is the one that made that step: x_k − x_{k+1} = P_k m_k.
    op = tr.operators[-1]
    assert isinstance(op, LODOOperator)
    assert torch.allclose(tr.x[-2] - tr.x[-1], op.matvec(solver.state["m_used"]), atol=1e-10)
    assert torch.allclose(tr.d[-1], tr.x[-2] - tr.x[-1], atol=1e-12)


def test_hypergradient_matches_central_differences():
    obj = LODORosenbrock()
    solver = LODO(lr=0.05, meta_lr=1e-3, layers=3, seed=1)
    run(solver, obj, obj.start(), 6)
    st = solver.state
    hg, theta, x, m = st["hypergrad"], st["theta_prev"], st["x_prev"], st["m_used"]
    idx = tuple(int(i) for i in torch.nonzero(hg.abs() == hg.abs().max())[0])
    assert abs(hg[idx].item()) > 1e-8
    eps = 1e-6

    def loss_at(delta):
        th = theta.clone()
        th[idx] += delta
        return obj.value(x - solver.precondition(th, m)).item()

    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert fd == pytest.approx(hg[idx].item(), rel=1e-5, abs=1e-10)
    # and a second, smaller entry
    flat = hg.flatten().abs()
    j = int(torch.argsort(flat)[flat.numel() // 2])
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(j), hg.shape))
    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert fd == pytest.approx(hg[idx].item(), rel=1e-4, abs=1e-9)


def test_lodo_beats_gd_with_the_same_step_on_a_fixed_quadratic():
    obj = _quadratic(10, seed=2, lo=1e-2, hi=1.0)
    x0 = torch.zeros(1, 10, dtype=DT)
    f_star = obj.value(obj.minimizer()).item()
    steps = 300
    gd = run(make_solver("gd", lr=1.0), obj, x0, steps).final_f().item() - f_star
    lodo = run(LODO(lr=1.0, seed=0), obj, x0, steps).final_f().item() - f_star  # paper defaults
    assert gd > 1e-4
    assert lodo < 1e-2 * gd


def test_diagonal_ablation_runs_and_learns():
    obj = _quadratic(6, seed=4)
    solver = LODO(lr=1.0, meta_lr=1e-2, diagonal=True)
    tr = run(solver, obj, torch.zeros(1, 6, dtype=DT), 50)
    assert solver.state["theta"].shape == (1, 6)
    assert not torch.allclose(solver.state["theta"], torch.ones(1, 6, dtype=DT))
    assert tr.f[-1].item() < tr.f[0].item()


@pytest.mark.parametrize("kwargs, word", [
    (dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(layers=0), "layers"),
    (dict(meta_lr=0), "meta_lr"), (dict(beta=1.0), "beta"), (dict(block=0), "block"),
])
def test_bad_hyperparameters_raise(kwargs, word):
    with pytest.raises(LSR1Error, match=word):
        LODO(**kwargs)
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(LSR1Error, match=word):
        LODOOptimizer([p], **kwargs)


def test_bad_starts_raise():
    obj = LODORosenbrock()
    with pytest.raises(LSR1Error, match="N = 0"):
        run(LODO(), Quadratic(torch.eye(1, dtype=DT)), torch.zeros(1, 0, dtype=DT), 3)
    with pytest.raises(LSR1Error, match="NaN or infinity"):
        run(LODO(), obj, torch.tensor([[float("nan"), 1.0]], dtype=DT), 3)
    with pytest.raises(LSR1Error, match="NaN or infinity"):
        run(LODO(), obj, torch.tensor([[float("inf"), 1.0]], dtype=DT), 3)


def test_batch_rows_are_independent():
    obj = _quadratic(6, B=2, seed=5)
    x0 = torch.randn(2, 6, dtype=DT, generator=torch.Generator().manual_seed(0))
    both = run(LODO(meta_lr=1e-2, seed=7), obj, x0, 25)
    for r in range(2):
        alone = run(LODO(meta_lr=1e-2, seed=7), obj.subset([r]), x0[r:r + 1], 25)
        assert torch.allclose(both.x[:, r], alone.x[:, 0], atol=1e-12, rtol=0)


def test_noisy_bowl_helper_moves_the_centre_and_lodo_tracks_it():
    bowl = NoisyQuadraticBowl(n=20, batch=2, seed=0)
    gen = torch.Generator().manual_seed(0)
    res = run_nonstationary(LODO(seed=0), bowl, torch.zeros(2, 20, dtype=DT), 200, gen,
                            record=lambda k, s, info: s.state["x"].clone(), record_every=50)
    assert res.f.shape == (201, 2) and len(res.records) == 4
    assert bowl.centre.abs().sum() > 0
    # tracking: the late loss is far below the loss of standing still at 0
    assert res.f[-50:].mean() < 0.2 * bowl.value(torch.zeros(2, 20, dtype=DT)).mean()
    assert res.f[-50:].mean() > bowl.noise_floor() * 0.5


def test_torch_optimizer_wrapper_fits_a_linear_regression_and_state_dict_round_trips():
    torch.manual_seed(0)
    X = torch.randn(64, 3)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    model = torch.nn.Linear(3, 1)
    opt = LODOOptimizer(model.parameters(), lr=0.3, meta_lr=1e-2, layers=4)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(150):
        opt.step(closure)
    last = closure().item()
    assert last < 1e-2 * first

    # state_dict: a second optimizer loaded with the state continues identically
    model2 = torch.nn.Linear(3, 1)
    model2.load_state_dict(model.state_dict())
    opt2 = LODOOptimizer(model2.parameters(), lr=0.3, meta_lr=1e-2, layers=4)
    opt2.load_state_dict(opt.state_dict())

    def closure2():
        opt2.zero_grad()
        loss = torch.nn.functional.mse_loss(model2(X), y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
        opt2.step(closure2)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(LSR1Error, match="closure"):
        opt.step(None)
