"""Issue 25 part 1: one update-rule interface. The solver, the torch.optim optimizer, the meta-training unroll and
the HMR model step through ``rule_for(config)``; their iterates are those of the rule's own step, for both forms
(and the qn form's diagonal metric), and none of them looks at the form."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from lsr1_core.errors import LSR1Error
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Optimizer, LSR1Solver, PaperRule, QNRule, rule_for
from lsr1_core.learned.qn import qn_init_state, qn_step
from lsr1_core.learned.rules import MARKS, MAX_HALVINGS, TRAIN_MAX_HALVINGS, StepOut
from lsr1_core.meta.unroll import unroll
from lsr1_core.objectives.base import Objective
from lsr1_core.solvers import run

ROOT = Path(__file__).resolve().parent.parent


class _Quad(Objective):
    """Batched ½ xᵀAx − bᵀx with autograd gradients (so a closure over the same formula gives the same numbers)."""
    name = "quad"

    def __init__(self, A, b):
        self.A, self.b = A, b
        self.batch, self.dim = A.shape[0], A.shape[1]

    def value(self, x):
        return 0.5 * (x * torch.einsum("bij,bj->bi", self.A, x)).sum(-1) - (self.b * x).sum(-1)

    def min_value(self):
        xs = torch.linalg.solve(self.A, self.b)
        return self.value(xs)


def _problem(B=3, N=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(B, N, N, generator=g, dtype=torch.float64)
    A = M @ M.transpose(1, 2) / N + 0.05 * torch.eye(N, dtype=torch.float64)
    A = A * torch.logspace(-1, 1, N, dtype=torch.float64)  # badly scaled columns (symmetrised below)
    A = 0.5 * (A + A.transpose(1, 2)) + N * torch.eye(N, dtype=torch.float64)
    return _Quad(A, torch.randn(B, N, generator=g, dtype=torch.float64)), torch.randn(B, N, generator=g,
                                                                                      dtype=torch.float64)


def _net(kind: str) -> LSR1Net:
    torch.manual_seed(3)
    if kind == "paper":
        net = LSR1Net(LSR1Config(hidden=8, memory=3, batchnorm=False, gamma1=0.05))
    elif kind == "paper_safe":
        net = LSR1Net(LSR1Config(hidden=8, memory=3, batchnorm=False, safeguard="armijo"))
    elif kind == "qn_diag":
        net = LSR1Net(LSR1Config.qn(hidden=8, memory=3, diag=1.0))
    else:
        net = LSR1Net(LSR1Config.qn(hidden=8, memory=3))
    if kind.startswith("qn"):
        with torch.no_grad():  # a trained-looking model: the zero heads perturbed
            for head in (net.vector_generator.fc2, net.lr_generator.fc2):
                head.weight.normal_(std=0.05)
    return net.double()


KINDS = ["paper", "paper_safe", "qn", "qn_diag"]


def test_rule_for_maps_each_form_to_its_rule():
    assert isinstance(rule_for(LSR1Config()), PaperRule) and rule_for(LSR1Config()).name == "paper"
    assert isinstance(rule_for(LSR1Config.qn()), QNRule) and rule_for(LSR1Config.qn()).scale_free
    assert rule_for(LSR1Config()).deferred and not rule_for(LSR1Config(safeguard="armijo")).deferred
    assert not rule_for(LSR1Config.qn()).deferred and not rule_for(LSR1Config.qn()).splittable
    with pytest.raises(LSR1Error, match="use step"):
        rule_for(LSR1Config.qn()).propose(_net("qn"), None)
    assert TRAIN_MAX_HALVINGS == 12 and MAX_HALVINGS == 30


@pytest.mark.parametrize("kind", KINDS)
def test_the_solver_takes_the_rules_inference_steps(kind):
    net = _net(kind)
    obj, x0 = _problem()
    tr = run(LSR1Solver(model=net, step_scale=0.7), obj, x0, 8)
    rule = rule_for(net.config)
    f0, g0 = obj.value_and_grad(x0)
    with torch.no_grad():
        state = rule.init(net, obj, x0, f0, g0)
        xs, evals = [x0], []
        for _ in range(8):
            state, out = rule.step(net, state, obj, differentiable=False, step_scale=0.7)
            assert isinstance(out, StepOut) and set(out.marks()) <= set(MARKS)
            xs.append(state.x), evals.append(out.evals)
    assert torch.equal(tr.x, torch.stack(xs)) and tr.evals.tolist() == evals
    assert torch.equal(tr.f[-1], state.f)


@pytest.mark.parametrize("kind", KINDS)
def test_the_optimizer_takes_the_solvers_iterates(kind):
    net = _net(kind)
    obj, x0 = _problem(B=1, seed=1)
    tr = run(LSR1Solver(model=net, step_scale=0.7), obj, x0, 6)
    w = torch.nn.Parameter(x0[0].clone())
    opt = LSR1Optimizer([w], model=net, step_scale=0.7, tolerance_grad=None, tolerance_change=None)

    def closure():
        opt.zero_grad()
        loss = obj.value(w.unsqueeze(0)).sum()
        loss.backward()
        return loss

    for k in range(1, 7):
        opt.step(closure)
        assert torch.equal(w.detach(), tr.x[k, 0]), f"step {k}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_unroll_takes_the_rules_training_steps(kind):
    net = _net(kind)
    obj, x0 = _problem(seed=2)
    loss, stats = unroll(net, obj, x0, 5, 0.3, detach_gradient=True, secant_form="relative", meta_loss="log_gap")
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    rule = rule_for(net.config)
    state = rule.init(net, obj, x0)
    f0, fstar = state.f.detach(), obj.min_value()
    gap0 = (f0 - fstar).clamp_min(torch.finfo(f0.dtype).tiny)
    total = 0
    for _ in range(5):
        state, out = rule.step(net, state, obj, differentiable=True, detach_gradient=True)
        f_k = torch.log10(((state.f - fstar).clamp_min(0) + 1e-8 * gap0) / gap0).mean()
        rel = out.departure if out.departure is not None else out.secant / (state.p * state.p).sum(-1).clamp_min(1e-12)
        total = total + f_k + 0.3 * rel.mean()
    (total / 5).backward()
    assert torch.equal(loss.detach(), (total / 5).detach())
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, net.parameters()))


def test_the_qn_training_step_is_qn_step_with_the_training_halvings():
    net = _net("qn")
    obj, x0 = _problem(seed=4)
    rule = rule_for(net.config)
    a = rule.init(net, obj, x0)
    b = qn_init_state(net, obj, x0)
    for _ in range(4):
        a, out_a = rule.step(net, a, obj, differentiable=True)
        b, out_b = qn_step(net, b, obj, max_halvings=TRAIN_MAX_HALVINGS)
        assert torch.equal(a.x, b.x) and out_a.evals == out_b.extras["evals"]
        assert torch.equal(out_a.safeguard, out_b.extras["safeguard"])


def test_optimizer_state_lives_in_self_state_and_round_trips_through_torch_save():
    net = _net("qn_diag")
    obj, x0 = _problem(B=1, seed=5)

    def make():
        w = torch.nn.Parameter(x0[0].clone())
        opt = LSR1Optimizer([w], model=net)

        def closure():
            opt.zero_grad()
            loss = obj.value(w.unsqueeze(0)).sum()
            loss.backward()
            return loss
        return w, opt, closure

    w, opt, closure = make()
    for _ in range(3):
        opt.step(closure)
    assert opt.defaults == {"step_scale": 1.0, "tolerance_grad": 1e-7, "tolerance_change": 1e-9}
    entry = opt.state[w]
    assert {"x", "g", "W", "P", "S", "k"} <= set(entry) and entry["k"] == 3
    sd = opt.state_dict()
    assert sd["state"][0]["form"] == "qn" and torch.equal(sd["state"][0]["P"], sd["lsr1"]["P"])
    assert sd["param_groups"][0]["step_scale"] == 1.0
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    w2, opt2, closure2 = make()
    w2.data.copy_(w.detach())
    opt2.load_state_dict(back)
    opt.step(closure), opt2.step(closure2)
    assert torch.equal(w.detach(), w2.detach())
    # a dict of the format before (the L-SR1 state under "lsr1" only, no hyperparameters in the group) loads too
    old = {"state": {}, "param_groups": [{"params": [0]}], "lsr1": {k: v for k, v in sd["lsr1"].items()}}
    w3, opt3, closure3 = make()
    w3.data.copy_(w2.detach())
    opt3.load_state_dict(opt2.state_dict())
    w4, opt4, closure4 = make()
    w4.data.copy_(w2.detach())
    old["lsr1"] = opt2.state_dict()["lsr1"]
    opt4.load_state_dict(old)
    opt3.step(closure3), opt4.step(closure4)
    assert torch.equal(w3.detach(), w4.detach())
    assert opt4.param_groups[0]["step_scale"] == 1.0


def test_a_state_of_the_wrong_size_or_with_nan_is_refused():
    net = _net("qn")
    obj, x0 = _problem(B=1, seed=6)
    w = torch.nn.Parameter(x0[0].clone())
    opt = LSR1Optimizer([w], model=net)

    def closure():
        opt.zero_grad()
        loss = obj.value(w.unsqueeze(0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    sd = opt.state_dict()
    fresh = LSR1Optimizer([torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))], model=net)
    with pytest.raises(LSR1Error, match="shape"):
        fresh.load_state_dict(sd)
    bad = {**sd, "lsr1": {**sd["lsr1"], "gamma": torch.full((1, 1), float("nan"), dtype=torch.float64)}}
    with pytest.raises(LSR1Error, match="NaN"):
        LSR1Optimizer([torch.nn.Parameter(x0[0].clone())], model=net).load_state_dict(bad)
    lacking = {**sd, "lsr1": {k: v for k, v in sd["lsr1"].items() if k != "U"}}
    with pytest.raises(LSR1Error, match="'U'"):
        LSR1Optimizer([torch.nn.Parameter(x0[0].clone())], model=net).load_state_dict(lacking)
    groups = [{**sd["param_groups"][0], "step_scale": -1.0}]
    with pytest.raises(LSR1Error, match="step_scale"):
        LSR1Optimizer([torch.nn.Parameter(x0[0].clone())], model=net).load_state_dict({**sd, "param_groups": groups})


def test_step_scale_is_a_param_group_hyperparameter():
    net = _net("paper")
    obj, x0 = _problem(B=1, seed=7)
    tr = run(LSR1Solver(model=net, step_scale=0.25), obj, x0, 1)
    w = torch.nn.Parameter(x0[0].clone())
    opt = LSR1Optimizer([w], model=net)
    opt.param_groups[0]["step_scale"] = 0.25  # as a scheduler would

    def closure():
        opt.zero_grad()
        loss = obj.value(w.unsqueeze(0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.step_scale == 0.25 and torch.equal(w.detach(), tr.x[1, 0])


CALLERS = ("lsr1_core/learned/solver.py", "lsr1_core/learned/optim.py", "lsr1_core/meta/train.py",
           "lsr1_core/meta/unroll.py", "lsr1_core/hmr/models.py")


@pytest.mark.parametrize("path", CALLERS)
def test_no_caller_branches_on_the_form(path):
    src = (ROOT / path).read_text()
    hits = [line for line in src.splitlines() if re.search(r"form ==|form !=|\.form\b|\"form\"\)|is_qn\b.*==", line)]
    assert not hits, f"{path} looks at the form: {hits}"


def test_limits_are_named_once():
    for path in (ROOT / "lsr1_core").rglob("*.py"):
        src = path.read_text()
        assert not re.search(r"max_halvings\s*=\s*\d", src), f"{path} writes a halving limit as a number"
    assert "TRAIN_MAX_HALVINGS = 12" in (ROOT / "lsr1_core/learned/rules.py").read_text()
