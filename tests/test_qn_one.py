"""The one-row step of the default form (lsr1_core.learned.qn_one) takes the batched step's iterates bit for bit,
and LSR1Optimizer's one-row stopping tests decide as the batched StopRule does."""
import math

import pytest
import torch

from lsr1_core.learned import LSR1Optimizer, qn_one
from lsr1_core.learned.model import default_net
from lsr1_core.learned.rules import rule_for
from lsr1_core.solvers.stopping import StopRule

from test_hot_paths import FUNCTIONS as _BASE, _Counting

FUNCTIONS = dict(_BASE)
# a nearly linear stretch (pairs of almost no curvature), a kink, many basins, and values near the float range
FUNCTIONS["nearly_linear"] = lambda x: x.sum(-1) + 1e-6 * (x ** 4).sum(-1)
FUNCTIONS["kink"] = lambda x: x.abs().sum(-1) + 0.1 * (x * x).sum(-1)
FUNCTIONS["rastrigin"] = lambda x: (x * x - 10 * torch.cos(2 * math.pi * x)).sum(-1) + 10 * x.shape[1]
FUNCTIONS["huge"] = lambda x: 1e30 * (x ** 2).sum(-1) * (1 + x.sum(-1) ** 2)


def _trajectory(fn, x0, steps, lean, scale):
    """The rule's steps from x0 with the one-row path on (lean True), off, or chosen per step (lean a function of the
    step index: one-row and batched steps mixed on one chain of states)."""
    pattern = lean if callable(lean) else (lambda k: lean)
    try:
        net = default_net().to(x0.dtype)
        obj = _Counting(fn)
        rule = rule_for(net.config)
        rows = []
        with torch.no_grad():
            st = rule.init(net, obj, x0)
            for k in range(steps):
                qn_one.ENABLED = pattern(k)
                x_old = st.x
                st, out = rule.step(net, st, obj, differentiable=False, step_scale=scale)
                rows.append(dict(still=bool(torch.equal(st.x, x_old)), x=st.x.clone(), f=st.f.clone(), g=st.g.clone(), p=st.p.clone(), q=st.q.clone(),
                                 gamma=st.gamma.clone(), P=st.P.clone(), Q=st.Q.clone(), evals=out.evals,
                                 d=out.direction.clone(), size=out.step_size.clone(),
                                 secant_rel=out.secant_rel.clone(), rel_sq=out.secant_rel_sq.clone(),
                                 **{k: bool(v) for k, v in out.marks().items()}))
        return rows, obj.calls
    finally:
        qn_one.ENABLED = True


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all())
    return a == b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_row_step_is_the_batched_step_bit_for_bit(dtype):
    seen = dict(restarted=0, not_bfgs=0, lengthened=0, shortened=0, no_move=0)
    for name, fn in FUNCTIONS.items():
        for n, seed, scale in ((2, 0, 1.0), (30, 1, 1.0), (7, 2, 0.7), (7, 1, 1.0)):
            g = torch.Generator().manual_seed(seed)
            x0 = (torch.randn(1, n, generator=g, dtype=torch.float64) * (1 + 2 * seed)).to(dtype)
            lean, calls_lean = _trajectory(fn, x0, 40, True, scale)
            ref, calls_ref = _trajectory(fn, x0, 40, False, scale)
            assert calls_lean == calls_ref, (name, n)
            for k, (a, b) in enumerate(zip(lean, ref)):
                bad = [key for key in b if not _same(a[key], b[key])]
                assert not bad, f"{name} N={n} scale={scale} {dtype}: step {k} differs in {bad}"
                seen["restarted"] += b["restarted"]
                seen["not_bfgs"] += not b["bfgs"]
                seen["lengthened"] += b["lengthened"]
                seen["shortened"] += bool((b["size"] < scale * 0.99).all() & (b["size"] > 0).all())
                seen["no_move"] += b["still"]
    # the set exercises every branch: restarts, pairs that do not enter, lengthened, shortened and refused steps
    assert all(v > 0 for v in seen.values()), seen


def _mlp_run(lean, steps=25, tol=(1e-7, 1e-9), save_at=None, hidden=8):
    qn_one.ENABLED = lean
    try:
        torch.manual_seed(0)
        X, y = torch.randn(64, 5), torch.randn(64, 1)
        model = (torch.nn.Sequential(torch.nn.Linear(5, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)) if hidden
                 else torch.nn.Linear(5, 1))
        opt = LSR1Optimizer(model.parameters(), tolerance_grad=tol[0], tolerance_change=tol[1])

        def closure():
            opt.zero_grad()
            loss = ((model(X) - y) ** 2).mean()
            loss.backward()
            return loss

        log = []
        for k in range(steps):
            if save_at == k:  # a saved state, loaded into a new optimizer, goes on as the first would have
                sd = opt.state_dict()
                opt = LSR1Optimizer(model.parameters(), tolerance_grad=tol[0], tolerance_change=tol[1])
                opt.load_state_dict(sd)
            loss = opt.step(closure)
            log.append((float(loss.detach()), opt.last_evals, opt.converged, opt.stop_reason,
                        torch.cat([p.detach().reshape(-1) for p in model.parameters()])))
        return log
    finally:
        qn_one.ENABLED = True


def test_optimizer_takes_the_same_steps_with_the_one_row_path():
    a, b = _mlp_run(True), _mlp_run(False)
    for k, (u, v) in enumerate(zip(a, b)):
        assert u[:4] == v[:4] and torch.equal(u[4], v[4]), f"step {k}"
    # with tolerances that end the run (least squares), both stop at the same step for the same reason
    for tol, why in (((1e-6, None), "max|g|"), ((None, 1e-9), "change of f or x")):
        a, b = _mlp_run(True, 40, tol, hidden=None), _mlp_run(False, 40, tol, hidden=None)
        assert [u[:4] for u in a] == [v[:4] for v in b]
        assert a[-1][2] and why in a[-1][3] and a[-1][1] == 0  # converged: the last calls cost no evaluation


def test_saved_state_goes_on_as_the_uninterrupted_run():
    a, b = _mlp_run(True, 20), _mlp_run(True, 20, save_at=9)
    # the new optimizer re-evaluates at its first step (it has no cached point): one more evaluation there
    for k, (u, v) in enumerate(zip(a, b)):
        assert u[0] == v[0] and torch.equal(u[4], v[4]), f"step {k}"
        assert v[1] == u[1] + (k == 9)


@pytest.mark.parametrize("mode", ["torch", "scipy"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_row_stop_tests_decide_as_the_batched_ones(mode, dtype):
    g = torch.Generator().manual_seed(1)
    for gtol, ftol in ((1e-7, 1e-9), (1e-3, None), (None, 1e-6), (0.0, 0.0), (None, None), (0.5, 1e-2)):
        one, ref = StopRule(gtol, ftol, mode), StopRule(gtol, ftol, mode)
        x = torch.randn(1, 6, generator=g, dtype=dtype)
        f = torch.tensor([3.0], dtype=dtype)
        if gtol is not None:
            assert one.at_start_one(torch.full((1, 6), gtol, dtype=dtype)) is not None
            assert one.at_start_one(torch.full((1, 6), 2 * gtol + 1e-3, dtype=dtype)) is None
        for k in range(1, 60):
            kind = k % 5
            # moves of every size, repeated points (a stall), tiny and equal changes of f
            step = torch.zeros_like(x) if kind in (1, 2) else torch.randn(1, 6, generator=g, dtype=dtype) * 10.0 ** -(k % 11)
            x_new = x - step
            f_new = f - (0 if kind == 3 else float(torch.rand(1, generator=g)) * 10.0 ** -(k % 13))
            g_new = torch.randn(1, 6, generator=g, dtype=dtype) * 10.0 ** -(k % 9)
            hit, why = ref.after_step(k, x, f, x_new, f_new, g_new)
            got = one.after_step_one(k, x, f, x_new, f_new, g_new)
            assert (got is not None) == bool(hit[0]) and got == why[0], (gtol, ftol, k)
            x, f = x_new, f_new.to(dtype)
        ref_start, _ = ref.at_start(g_new)
        assert (one.at_start_one(g_new) is not None) == bool(ref_start[0])


def test_a_pair_computed_into_the_buffer_is_not_overwritten_by_a_sibling_state():
    """A step computes its pair into the slot where the next step stores it. Another state with the same stored pairs
    but a different newest pair (a branch) must get its own buffer, not write over that slot."""
    import dataclasses

    fn = FUNCTIONS["rosenbrock"]
    net = default_net().to(torch.float64)
    obj = _Counting(fn)
    rule = rule_for(net.config)
    with torch.no_grad():
        st = rule.init(net, obj, torch.tensor([[-1.2, 1.0, 0.3]], dtype=torch.float64))
        for _ in range(3):
            st, _ = rule.step(net, st, obj, differentiable=False)
        p_before, q_before = st.p.clone(), st.q.clone()
        branch = dataclasses.replace(st, p=st.p * 0.5, q=st.q * 0.5)  # same stored pairs, another newest pair
        rule.step(net, branch, obj, differentiable=False)
        assert torch.equal(st.p, p_before) and torch.equal(st.q, q_before)
        # and the original state still steps as it would have
        a, _ = rule.step(net, st, obj, differentiable=False)
        qn_one.ENABLED = False
        try:
            fresh = dataclasses.replace(st, p=p_before, q=q_before)
            b, _ = rule.step(net, fresh, obj, differentiable=False)
        finally:
            qn_one.ENABLED = True
        assert torch.equal(a.x, b.x) and torch.equal(a.f, b.f)


def test_one_row_and_batched_steps_mixed_on_one_state_chain():
    """Steps of the one-row path and of the batched code alternate on one chain of states (the one-row path keeps
    the pairs' inner products as numbers; the batched code reads the buffer's tensor of them): the iterates are the
    all-batched chain's, bit for bit."""
    for name in ("rosenbrock", "rastrigin", "nearly_linear"):
        for dtype, n in ((torch.float32, 40), (torch.float64, 9)):
            x0 = torch.randn(1, n, generator=torch.Generator().manual_seed(5), dtype=dtype)
            ref, calls = _trajectory(FUNCTIONS[name], x0, 30, False, 1.0)
            for pattern in (lambda k: k % 2 == 0, lambda k: k % 3 != 2, lambda k: k >= 12):
                got, calls_got = _trajectory(FUNCTIONS[name], x0, 30, pattern, 1.0)
                assert calls_got == calls
                for k, (a, b) in enumerate(zip(got, ref)):
                    bad = [key for key in b if not _same(a[key], b[key])]
                    assert not bad, f"{name} {dtype}: step {k} differs in {bad}"


def test_optimizer_steps_do_not_inspect_the_pair_buffer_again(monkeypatch):
    """The one-row step reads its window and next slots from the record the last step left (append_pair runs at the
    first step and where the window moves to a new buffer, not every step)."""
    from lsr1_core.learned import compact

    calls = []
    real = compact.append_pair
    monkeypatch.setattr(compact, "append_pair", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    A, b = torch.randn(40, 30), torch.randn(40)
    w = torch.nn.Parameter(torch.zeros(30))
    opt = LSR1Optimizer([w], tolerance_grad=None, tolerance_change=None)

    def closure():
        opt.zero_grad()
        loss = ((A @ w - b) ** 2).mean() + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    for _ in range(30):
        opt.step(closure)
    assert 1 <= len(calls) <= 4, len(calls)
    # the state read back is the state written, and it follows an edit of the optimizer's state entry
    st = opt._lsr1
    assert st is opt._lsr1 and torch.equal(st.x.reshape(-1), w.detach())
    entry = opt.state[w]
    entry["x"] = entry["x"] + 1.0
    assert opt._lsr1 is not st and torch.equal(opt._lsr1.x, entry["x"])
