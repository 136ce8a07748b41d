"""Issue 24 items 9–13, 15, 19, 20: LSR1Optimizer and run() refuse or handle what used to go silently wrong."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr1_core.errors import LSR1Error, ShapeError
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Optimizer
from lsr1_core.objectives import Rosenbrock
from lsr1_core.objectives.base import Objective
from lsr1_core.solvers import make_solver, run


def _ls(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(32, n, generator=g, dtype=torch.float64)
    y = X @ torch.arange(1.0, n + 1, dtype=torch.float64)
    return X, y


def _opt(params, form="qn", **kw):
    cfg = LSR1Config.qn() if form == "qn" else LSR1Config(hidden=8, batchnorm=False)
    return LSR1Optimizer(params, model=LSR1Net(cfg).double(), **kw)


def _trained(form="qn", steps=3):
    X, y = _ls()
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = _opt([w], form, step_scale=0.05 if form == "paper" else 1.0)

    def closure():
        opt.zero_grad()
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return opt, w, closure


def test_load_state_dict_leaves_the_callers_dict_alone():  # item 9
    opt, w, _ = _trained()
    sd = opt.state_dict()
    keys = set(sd)
    a = _opt([torch.nn.Parameter(w.detach().clone())])
    b = _opt([torch.nn.Parameter(w.detach().clone())])
    a.load_state_dict(sd)
    assert set(sd) == keys and "lsr1" in sd
    b.load_state_dict(sd)
    assert b._lsr1 is not None and int(b._lsr1.k) == int(opt._lsr1.k)


def test_a_state_of_the_other_form_is_refused():  # item 10
    opt, w, _ = _trained("qn")
    paper = _opt([torch.nn.Parameter(w.detach().clone())], "paper")
    with pytest.raises(LSR1Error, match="'qn' form"):
        paper.load_state_dict(opt.state_dict())
    sd = opt.state_dict()
    del sd["lsr1"]["form"]  # a state saved before the form was recorded: told apart by its pairs
    with pytest.raises(LSR1Error, match="'qn' form"):
        paper.load_state_dict(sd)
    popt, pw, _ = _trained("paper")
    with pytest.raises(LSR1Error, match="'paper' form"):
        _opt([torch.nn.Parameter(pw.detach().clone())], "qn").load_state_dict(popt.state_dict())


def test_add_param_group_is_refused():  # item 11
    opt, _, _ = _trained()
    with pytest.raises(LSR1Error, match="single parameter group"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]})


@pytest.mark.parametrize("form", ["paper", "qn"])
def test_a_parameter_without_gradient_is_not_moved(form):  # item 12
    X, y = _ls()
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    unused = torch.nn.Parameter(torch.full((3,), 0.5, dtype=torch.float64))
    opt = _opt([w, unused], form, step_scale=0.05 if form == "paper" else 1.0)

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        return loss

    first = float(closure())
    for _ in range(5):
        opt.step(closure)
    assert torch.equal(unused.detach(), torch.full((3,), 0.5, dtype=torch.float64))
    assert float(closure()) < first


def test_a_closure_that_fails_in_a_trial_leaves_the_parameters_where_the_step_started():  # item 13
    X, y = _ls()
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = _opt([w])
    fail = {"on": False}

    def closure():
        if fail["on"]:
            raise RuntimeError("the data loader broke")
        opt.zero_grad()
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    before = w.detach().clone()
    fail["on"] = True  # the next step starts from the cached point, so its first call is a trial point
    with pytest.raises(RuntimeError, match="data loader"):
        opt.step(closure)
    assert torch.equal(w.detach(), before)
    fail["on"] = False
    opt.step(closure)  # and the optimizer goes on from there
    assert float(closure()) < float(((X @ before - y) ** 2).mean())


class _BadShape(Objective):
    name, dim, batch = "bad", 2, None

    def __init__(self, mode):
        self.mode = mode

    def value_and_grad(self, x):
        f = (x * x).sum(-1)
        g = 2 * x
        if self.mode == "scalar":
            return f.sum(), g
        if self.mode == "g_col":
            return f, g[:, :1]
        return f.unsqueeze(-1), g


@pytest.mark.parametrize("mode", ["scalar", "g_col", "f_col"])
@pytest.mark.parametrize("solver", ["qn", "lbfgs", "adam", "gd", "newton"])
def test_objectives_returning_the_wrong_shape_are_refused(mode, solver):  # item 15
    from lsr1_core.learned import LSR1Solver
    s = LSR1Solver(model=LSR1Net(LSR1Config.qn())) if solver == "qn" else make_solver(solver)
    with pytest.raises(ShapeError, match="shape"):
        run(s, _BadShape(mode), torch.ones(3, 2, dtype=torch.float32 if solver == "qn" else torch.float64), 3)


class _Raises(Objective):
    name, dim, batch = "raises", 2, None

    def value(self, x):
        raise RuntimeError("my model's forward failed: index 7 out of range")


def test_the_objectives_own_error_is_shown():  # item 20
    with pytest.raises(LSR1Error, match="index 7 out of range") as e:
        run(make_solver("gd"), _Raises(), torch.zeros(1, 2, dtype=torch.float64), 2)
    assert "dtype" not in str(e.value)


@pytest.mark.parametrize("ret, match", [(None, "NoneType"), ("1.0", "str"), ("vector", "shape")])
def test_closure_returning_nonsense_is_refused(ret, match):  # item 19
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = _opt([w])

    def closure():
        opt.zero_grad()
        loss = (w * w).sum() + 1
        loss.backward()
        return (w * 1) if ret == "vector" else ret

    with pytest.raises(LSR1Error, match=match):
        opt.step(closure)


def test_bad_parameters_are_refused_with_messages():  # item 19
    with pytest.raises(LSR1Error, match="no parameters"):
        _opt([torch.nn.Parameter(torch.zeros(2), requires_grad=False)])
    with pytest.raises(LSR1Error, match="no parameters"):
        _opt([torch.nn.Parameter(torch.zeros(0))])
    for dt in (torch.float16, torch.bfloat16):
        with pytest.raises(LSR1Error, match="float32 or float64"):
            _opt([torch.nn.Parameter(torch.zeros(2, dtype=dt))])
    with pytest.raises(LSR1Error, match="meta device"):
        _opt([torch.nn.Parameter(torch.zeros(2, device="meta"))])
    emb = torch.nn.Embedding(5, 2, sparse=True).double()
    opt = _opt(emb.parameters())

    def closure():
        opt.zero_grad()
        loss = emb(torch.tensor([1, 2])).pow(2).sum()
        loss.backward()
        return loss

    with pytest.raises(LSR1Error, match="sparse"):
        opt.step(closure)


@settings(max_examples=80, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["x", "f", "g", "W", "P", "k", "form", "gamma", "junk"]),
                       st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=3), st.booleans(),
                                 st.just(torch.zeros(1, 4, dtype=torch.float64)),
                                 st.just(torch.zeros(1, 4, dtype=torch.long)), st.lists(st.floats(), max_size=2)),
                       max_size=6))
def test_fuzzed_lsr1_state_is_refused_or_loads(extra):  # hypothesis over load_state_dict
    opt, w, closure = _trained()
    sd = opt.state_dict()
    sd["lsr1"] = extra
    fresh = _opt([torch.nn.Parameter(w.detach().clone())])
    try:
        fresh.load_state_dict(sd)
    except LSR1Error:
        return
    except (ValueError, KeyError) as e:  # torch's own checks of the base state (param groups) are allowed
        assert "lsr1" not in str(e).lower()
        return
