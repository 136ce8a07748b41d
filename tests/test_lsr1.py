import pytest
import torch

from lsr1_core.analysis import secant_residual
from lsr1_core.errors import LSR1Error, NonFiniteError, ShapeError
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Optimizer, LSR1Solver, init_state, lsr1_step
from lsr1_core.learned.model import LSR1Operator
from lsr1_core.objectives import Quadratic, Rosenbrock, quadratic_split
from lsr1_core.solvers import run


@pytest.fixture
def net():
    torch.manual_seed(0)
    return LSR1Net(LSR1Config(hidden=32, memory=4)).double()


def test_architecture_follows_tables_5_and_6():
    net = LSR1Net()
    enc = net.encoder
    assert enc.fc1.in_features == 5 and enc.fc2.out_features == 128
    assert net.vector_generator.fc1.in_features == 128 and net.vector_generator.fc2.out_features == 1
    assert net.lr_generator.fc2.out_features == 1
    blk = enc.mlp1
    kinds = [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.Module, torch.nn.Dropout, torch.nn.Linear,
             torch.nn.BatchNorm1d, torch.nn.Dropout]
    children = list(blk.children())
    assert len(children) == 7 and all(isinstance(m, k) for m, k in zip(children, kinds))
    assert type(children[2]).__name__ == "PReLU"
    assert LSR1Net(LSR1Config(features=("x", "g"))).encoder.fc1.in_features == 2


def test_preconditioner_is_psd_with_eigenvalues_at_least_one(net):
    q, x0 = quadratic_split("test")
    t = run(LSR1Solver(model=net), q, x0, 6)
    for op in t.operators:
        ev = op.eigvalsh()
        assert (ev >= 1 - 1e-9).all()
        # and it is I + Σ v vᵀ with the buffer it reports
        assert torch.allclose(op.dense(), torch.eye(10, dtype=ev.dtype) + torch.einsum("bli,blj->bij", op.W, op.W))
    assert t.operators[-1].W.shape[1] == 4  # buffer capped at L


def test_buffer_is_fifo(net):
    q, x0 = quadratic_split("test")
    t = run(LSR1Solver(model=net), q, x0, 6)
    v = t.extras["v"]  # (T, B, N)
    W = t.operators[-1].W
    assert torch.allclose(W, v[-4:].permute(1, 0, 2))


def test_step_internals_and_secant_residual_match_dense(net):
    q, x0 = quadratic_split("test")
    s = init_state(q, x0)
    with torch.no_grad():
        s1, out1 = lsr1_step(net.eval(), s, q)
        s2, out2 = lsr1_step(net, s1, q)
    Bd = out2.operator.dense()
    assert torch.allclose(out2.d, torch.einsum("bij,bj->bi", Bd, s1.g), atol=1e-10)
    assert torch.allclose(s2.x, s1.x - out2.alpha * out2.d)
    p, qq = s2.x - s1.x, s2.g - s1.g
    r_dense = ((p - torch.einsum("bij,bj->bi", Bd, qq)) ** 2).sum(-1)
    assert torch.allclose(out2.secant, r_dense, atol=1e-9)
    assert torch.allclose(out2.secant_rel, secant_residual(Bd, p, qq), atol=1e-9)
    cfg = net.config
    assert ((out2.alpha - cfg.gamma1).abs() >= 0).all() and (out2.alpha > 0).all()


def test_learning_rate_generator_formula(net):
    feats = torch.randn(3, 7, 5, dtype=torch.float64)
    net.eval()
    z = net.encoder(feats.reshape(-1, 5))
    a_tilde = net.lr_generator(z).reshape(3, 7)
    _, alpha = net(feats)
    assert torch.allclose(alpha, (0.4 * torch.exp(0.001 * a_tilde)).clamp(max=10.0))


def test_dimension_invariance_runs_at_n_10000():
    net = LSR1Net(LSR1Config(hidden=16, memory=4))  # trained size is irrelevant: weights are per coordinate
    obj = Rosenbrock(10_000)
    x0 = torch.zeros(1, 10_000)
    t = run(LSR1Solver(model=net), obj, x0, 3, record_vectors=False)
    assert t.x[-1].shape == (1, 10_000)
    assert torch.isfinite(t.f).all()


def test_paper_code_variants_as_options(net):
    q, x0 = quadratic_split("test")
    cfg = net.config.replace(rescale_direction=True, drop_identity_when_full=True, bq_feature=True)
    alt = LSR1Net(cfg).double()
    alt.load_state_dict(net.state_dict())
    t = run(LSR1Solver(model=alt), q, x0, 6)
    # rescaled directions have the gradient's norm
    assert torch.allclose(t.d[0].norm(dim=-1), t.g[0].norm(dim=-1), rtol=1e-8)
    # once the buffer is full the identity is dropped: rank ≤ L
    op = t.operators[-1]
    assert not op.identity
    assert torch.linalg.matrix_rank(op.dense()).max() <= 4


def test_test_time_buffer_size_override(net):
    q, x0 = quadratic_split("test")
    t = run(LSR1Solver(model=net, memory=2), q, x0, 5)
    assert t.operators[-1].W.shape[1] == 2


def test_inference_does_not_change_batchnorm_statistics(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q, x0 = quadratic_split("test")
    run(LSR1Solver(model=net), q, x0, 4)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_divergence_is_marked_not_silent():
    torch.manual_seed(1)
    net = LSR1Net(LSR1Config(hidden=16, memory=4, gamma1=5.0, lr_clamp=None)).double()
    H = torch.diag(torch.tensor([100.0, 1.0], dtype=torch.float64))
    q = Quadratic(H)
    x0 = torch.tensor([[1.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    t = run(LSR1Solver(model=net), q, x0, 400)
    assert t.diverged.all()
    k = int(t.diverged_at[0])
    assert "non-finite" in t.reason[0] or "blew up" in t.reason[0]  # caught finite (10^8×) or non-finite
    assert torch.isfinite(t.x).all() and torch.isfinite(t.f).all()  # frozen at the last finite point
    assert torch.equal(t.x[k + 1:, 0], t.x[k:k + 1, 0].expand_as(t.x[k + 1:, 0]))


def test_bad_inputs_give_clear_errors(net):
    q, x0 = quadratic_split("test")
    with pytest.raises(LSR1Error, match="buffer size"):
        LSR1Config(memory=0)
    with pytest.raises(LSR1Error, match="subset"):
        LSR1Config(features=("x", "z"))
    with pytest.raises(LSR1Error, match="buffer size"):
        LSR1Solver(model=net, memory=0)
    bad = x0.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="rows \\[3\\]"):
        run(LSR1Solver(model=net), q, bad, 3)
    with pytest.raises(ShapeError):
        run(LSR1Solver(model=net), q, x0[0], 3)
    with pytest.raises(LSR1Error, match="at most one"):
        LSR1Solver(model=net, checkpoint="pretrained/qn_quadratic")
    with pytest.raises(LSR1Error, match="at most one"):
        LSR1Optimizer([torch.zeros(2, requires_grad=True)], model=net, checkpoint="pretrained/qn_quadratic")


def test_without_a_model_the_optimizer_and_solver_run_the_untrained_qn_bfgs_form():
    """LSR1Optimizer(params) and LSR1Solver() need no card: the untrained qn_bfgs form, built without touching
    the caller's random numbers, and it trains a model like torch.optim.LBFGS does."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    w = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = LSR1Optimizer([w])
    assert torch.equal(torch.get_rng_state(), before)
    assert opt.net.config == LSR1Config.qn_bfgs() and opt.rule.name == "qn"
    assert LSR1Solver().net.config == LSR1Config.qn_bfgs()
    g = torch.Generator().manual_seed(0)
    A, b = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)

    def closure():
        opt.zero_grad()
        loss = ((A @ w - b) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(20):
        opt.step(closure)
    w_star = torch.linalg.lstsq(A, b).solution
    assert opt.converged and (w.detach() - w_star).abs().max() < 1e-6


def test_torch_optim_wrapper_trains_a_model(net):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1).double()
    X = torch.randn(64, 4, dtype=torch.float64)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]], dtype=torch.float64)
    opt = LSR1Optimizer(model.parameters(), model=net)

    def closure():
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        return loss

    first = float(closure().detach())
    for _ in range(30):
        last = float(opt.step(closure))
    assert last < 0.05 * first
    sd = opt.state_dict()
    assert sd["lsr1"]["W"].shape[1] == 4
    with pytest.raises(LSR1Error, match="closure"):
        opt.step(None)


def test_pretrained_optimizer_with_step_scale_fits_a_regression():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    X = torch.randn(32, 3)
    y = X.sum(1, keepdim=True)
    opt = LSR1Optimizer(model.parameters(), checkpoint="pretrained/quadratic", step_scale=0.3)

    def closure():
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        return loss

    first = float(closure().detach())
    for _ in range(30):
        last = float(opt.step(closure).detach())
    assert last < 1e-4 * first
    with pytest.raises(LSR1Error, match="step_scale"):
        LSR1Optimizer(model.parameters(), checkpoint="pretrained/quadratic", step_scale=0)
