"""The meta-loss in evaluations, per-row evaluation counts, and the antithetic ES estimator (issue 22)."""
import math

import pytest
import torch

from lsr1_core.errors import LSR1Error
from lsr1_core.meta.budget import (CountingObjective, budget_area, budget_log_gap, budget_terms, central_difference,
                                   es_gradient, es_gradient_with_stats, run_budget, run_counted, train_scalars)
from lsr1_core.objectives.quadratic import spectrum_quadratics
from lsr1_core.solvers import make_solver

torch.set_num_threads(1)


def test_budget_log_gap_values():
    # two problems, f* = 0; per-step evaluation counts 1, 2, 1 (cumulative 0, 1, 3, 4)
    f = torch.tensor([[1.0, 10.0], [0.1, 1.0], [0.01, 1e-3], [1e-3, 1e-30]], dtype=torch.float64)
    ev = torch.tensor([1, 2, 1])
    terms, above = budget_terms(f, ev, 0.0, budgets=(1, 2, 3, 4), normalize=False)
    # budget 1 and 2: iterate 1; 3: iterate 2; 4: iterate 3 (row 1 at the floor 1e-12)
    expect = torch.tensor([[-1.0, 0.0], [-1.0, 0.0], [-2.0, -3.0], [-3.0, -12.0]], dtype=torch.float64)
    assert torch.allclose(terms, expect, atol=1e-12)
    assert above.tolist() == [[True, True], [True, True], [True, True], [True, False]]
    loss = budget_log_gap(f, ev, 0.0, budgets=(1, 2, 3, 4), normalize=False)
    assert float(loss) == pytest.approx(float(expect.mean()), abs=1e-12)
    # normalised: relative to f0 − f*
    rel = budget_log_gap(f, ev, 0.0, budgets=(4,), normalize=True)
    assert float(rel) == pytest.approx(0.5 * (-3.0 + -12.0), abs=1e-12)
    # a budget below the first step's cost keeps the start; start_evals shifts every count
    t0, _ = budget_terms(f, ev, 0.0, budgets=(0.5,), normalize=False)
    assert torch.allclose(t0, torch.log10(f[0:1]))
    t1, _ = budget_terms(f, ev, 0.0, budgets=(2,), normalize=False, start_evals=1)
    assert torch.allclose(t1, torch.log10(f[1:2]))


def test_per_row_counts_and_cumulative_form():
    f = torch.tensor([[4.0, 4.0], [2.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    per_row = torch.tensor([[1, 3], [1, 3]])  # row 0 pays 1 a step, row 1 pays 3
    terms, _ = budget_terms(f, per_row, 0.0, budgets=(2, 3), normalize=False)
    assert torch.allclose(terms, torch.log10(torch.tensor([[1.0, 4.0], [1.0, 2.0]], dtype=torch.float64)))
    cum = torch.tensor([[0, 0], [1, 3], [2, 6]])
    same, _ = budget_terms(f, cum, 0.0, budgets=(2, 3), normalize=False, cumulative=True)
    assert torch.equal(same, terms)


def test_area_is_mean_over_integer_budgets_and_rewards_saving_evaluations():
    f = torch.tensor([[1.0], [0.1], [0.01]], dtype=torch.float64)
    area = budget_area(f, torch.tensor([1, 1]), 0.0, max_evals=4, normalize=False)
    assert float(area) == pytest.approx((-1 - 2 - 2 - 2) / 4)
    # the same iterates reached with more evaluations score worse
    slow = budget_area(f, torch.tensor([2, 2]), 0.0, max_evals=4, normalize=False)
    assert float(slow) > float(area) + 0.5


def test_gradient_flows_to_the_selected_iterate_and_not_through_floored_terms():
    f = torch.tensor([[1.0, 1.0], [0.5, 1e-20], [0.2, 1e-25]], dtype=torch.float64, requires_grad=True)
    loss = budget_log_gap(f, torch.tensor([1, 1]), 0.0, budgets=(1, 2), normalize=False)
    loss.backward()
    g = f.grad
    # row 0: budget 1 selects f[1], budget 2 selects f[2]: d/df log10 f = 1/(f ln 10), averaged over 4 terms
    assert float(g[1, 0]) == pytest.approx(1 / (0.5 * math.log(10)) / 4, rel=1e-9)
    assert float(g[2, 0]) == pytest.approx(1 / (0.2 * math.log(10)) / 4, rel=1e-9)
    assert float(g[0, 0]) == 0.0
    # row 1 is at the floor at both budgets: no gradient
    assert torch.all(g[:, 1] == 0)
    assert torch.isfinite(g).all()


def test_bad_input_is_refused():
    f = torch.ones(3, 2, dtype=torch.float64)
    with pytest.raises(LSR1Error):
        budget_log_gap(f, torch.tensor([1, 1, 1]), 0.0)  # wrong number of steps
    with pytest.raises(LSR1Error):
        budget_log_gap(f, torch.tensor([1, 1]), 0.0, budgets=(0,))
    with pytest.raises(LSR1Error):
        budget_log_gap(f, torch.tensor([1, -1]), 0.0)
    with pytest.raises(LSR1Error):
        budget_log_gap(f, torch.tensor([1, 1]), 1.0)  # f0 = f*: nothing to normalise by


def _quadratics(seed=3, n=20, batch=8, cond=10.0):
    q, x0 = spectrum_quadratics(n, batch, generator=torch.Generator().manual_seed(seed), max_cond=cond)
    return q, x0, q.value(q.minimizer()).detach()


def test_counting_objective_charges_only_fresh_points():
    q, x0, _ = _quadratics(batch=3)
    c = CountingObjective(q)
    c.value_and_grad(x0)
    x1 = x0.clone()
    x1[1] += 1.0
    c.value_and_grad(x1)  # only row 1 moved
    c.value_and_grad(x1)  # nothing moved: a lock-step re-evaluation
    assert c.counts.tolist() == [1.0, 2.0, 1.0]
    # Adam pays one evaluation a step, the start included
    r = run_budget(make_solver("adam", lr=0.01), q, x0, max_evals=5)
    assert r.cum[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # a strong-Wolfe L-BFGS batch: each row pays at most the batch's count, at least one per step
    r = run_budget(make_solver("lbfgs", memory=8, line_search="strong_wolfe"), q, x0, max_evals=12)
    steps = r.cum.diff(dim=0)
    assert bool((steps >= 1).all())


def _smooth_loss():
    """Budget loss of the untrained qn form on 8 well-conditioned quadratics (κ ≤ 10, N = 20) as a function of
    θ = (log step_scale, log(gamma_factor/0.5)), near θ = (−0.7, 0): every step is a full step (one evaluation,
    the safeguard never shortens it), so the loss is a smooth function of θ there."""
    from lsr1_core.meta.families import qn_solver

    q, x0, fstar = _quadratics()

    def loss(theta, seed=0):
        sol = qn_solver(step_scale=math.exp(float(theta[0])), gamma_factor=0.5 * math.exp(float(theta[1])))
        r = run_budget(sol, q, x0, max_evals=8)
        return float(budget_log_gap(r.f, r.cum, fstar, (4, 6, 8), cumulative=True))

    return loss


def test_es_matches_central_differences_on_a_smooth_family():
    loss = _smooth_loss()
    theta = torch.tensor([-0.7, 0.0], dtype=torch.float64)
    fd = central_difference(loss, theta, 3e-3, 0)
    fd_coarse = central_difference(loss, theta, 1e-2, 0)
    # the family is smooth here: differences at two step lengths agree
    assert torch.allclose(fd, fd_coarse, rtol=0.02, atol=2e-3), (
        f"the budget loss is no longer smooth at θ = {theta.tolist()} (central differences {fd.tolist()} at h = 3e-3, "
        f"{fd_coarse.tolist()} at h = 1e-2): if the qn rule changed (e.g. its line search), pick a θ or family where "
        f"every step is a full step again")
    assert float(fd[0]) < -0.5  # a longer step helps at this budget (a clear, non-zero gradient)
    # orthogonal antithetic ES: a rotated central difference, equal to the gradient up to O(σ²)
    g = es_gradient(loss, theta, sigma=0.01, pairs=2, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(g, fd, rtol=0.05, atol=0.02 * float(fd.norm())), (g, fd)
    # i.i.d. Gaussian directions: unbiased, within its own standard error (+ margin)
    est = es_gradient_with_stats(loss, theta, sigma=0.02, pairs=40, generator=torch.Generator().manual_seed(2),
                                 orthogonal=False)
    err = (est.grad - fd).abs()
    assert bool((err <= 4 * est.stderr + 0.05 * fd.abs() + 1e-3).all()), (est.grad, est.stderr, fd)


def test_es_uses_common_random_numbers_within_a_pair():
    seen = []

    def loss(theta, seed):
        seen.append((theta.clone(), seed))
        return float((theta ** 2).sum()) + seed % 7  # the seed shifts the loss: CRN cancels it

    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    est = es_gradient_with_stats(loss, theta, sigma=0.1, pairs=4, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 8
    for i in range(0, 8, 2):
        (tp, sp), (tm, sm) = seen[i], seen[i + 1]
        assert sp == sm
        assert torch.allclose(tp + tm, 2 * theta)
    # exact for a quadratic (antithetic differences have no O(σ²) term); orthogonal blocks: no sampling noise
    assert torch.allclose(est.grad, 2 * theta, atol=1e-9)


def test_train_scalars_descends_and_keeps_the_best_by_validation():
    target = torch.tensor([0.5, -0.4], dtype=torch.float64)

    def loss(theta, seed):
        return float(((theta - target) ** 2).sum()) + 0.01 * (seed % 3)

    def val(theta):
        return float(((theta - target) ** 2).sum())

    h = train_scalars(loss, val, [0.0, 0.0], iterations=40, sigma=0.05, pairs=2, lr=0.05, seed=0)
    assert h.val_loss[0] == pytest.approx(float((target ** 2).sum()))
    assert min(h.val_loss) < 0.05 * h.val_loss[0]
    assert h.val_loss[h.best_iteration] == min(h.val_loss)
    assert len(h.thetas) == 41 and len(h.grads) == 40
    # a loss that only gets worse keeps the start
    h0 = train_scalars(lambda th, s: 0.0, lambda th: float((th ** 2).sum()) + 1.0, [0.0], iterations=3, seed=1,
                       lr=0.5)
    assert h0.best_iteration == 0


def test_es_refuses_non_finite_loss_and_bad_arguments():
    with pytest.raises(LSR1Error, match="not finite"):
        es_gradient(lambda th, s: float("nan"), [0.0], 0.1, 1, torch.Generator().manual_seed(0))
    with pytest.raises(LSR1Error):
        es_gradient(lambda th, s: 0.0, [0.0], 0.0, 1, torch.Generator().manual_seed(0))
    with pytest.raises(LSR1Error):
        es_gradient(lambda th, s: 0.0, [0.0], 0.1, 0, torch.Generator().manual_seed(0))


def test_per_row_counts_in_a_batch_are_what_each_problem_pays_alone():
    """The batched per-row count equals the count of the same problem run alone (whose own Trace.evals, plus the
    start, is the project's count), while the batch's Trace.evals charges every row the lock-step maximum."""
    from lsr1_core.meta.families import qn_solver
    from lsr1_core.objectives import Quadratic
    from lsr1_core.solvers import run

    q, x0, _ = _quadratics(seed=4, n=12, batch=4, cond=100.0)
    makers = {"qn": qn_solver, "lbfgs": lambda: make_solver("lbfgs", memory=8, line_search="strong_wolfe")}
    for name, mk in makers.items():
        batched = run_budget(mk(), q, x0, max_evals=10 ** 6, max_steps=8)
        lockstep = 1 + int(run(mk(), q, x0, 8, record_vectors=False, keep_operators=False).evals.sum())
        for b in range(4):
            alone = Quadratic(q.H[b:b + 1], q.b[b:b + 1])
            r = run_budget(mk(), alone, x0[b:b + 1], max_evals=10 ** 6, max_steps=8)
            own = 1 + int(run(mk(), alone, x0[b:b + 1], 8, record_vectors=False, keep_operators=False).evals.sum())
            assert abs(float(batched.cum[-1, b]) - float(r.cum[-1, 0])) <= 1, (name, b)
            assert abs(float(r.cum[-1, 0]) - own) <= 1, (name, b)
            assert float(batched.cum[-1, b]) <= lockstep


def test_run_counted_wraps_the_projects_run():
    from lsr1_core.solvers import run

    q, x0, fstar = _quadratics(seed=5, n=8, batch=3)
    r = run_counted(make_solver("lbfgs", memory=8, line_search="strong_wolfe"), q, x0, 6)
    t = run(make_solver("lbfgs", memory=8, line_search="strong_wolfe"), q, x0, 6)
    assert torch.allclose(r.f, t.f)
    assert r.cum.shape == r.f.shape and float(r.cum[0, 0]) == 1.0
    assert bool((r.cum.diff(dim=0) >= 1).all())
    assert bool((r.cum[-1] <= 1 + t.evals.sum()).all())
    loss = budget_log_gap(r.f, r.cum, fstar, (4, 8), cumulative=True)
    assert float(loss) < 0
