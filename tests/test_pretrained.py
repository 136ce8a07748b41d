"""The shipped checkpoints load without training, run at N = 2 and N = 1000, and (where it holds) beat tuned
gradient descent on the test quadratics."""
import pytest
import torch

from lsr1_core.experiments.quadratics import tuned_gd
from lsr1_core.learned import LSR1Solver
from lsr1_core.objectives import quadratic_split, random_quadratics
from lsr1_core.pretrained import list_pretrained, load_pretrained
from lsr1_core.solvers import run

SHIPPED = sorted(list_pretrained())


def test_the_quadratic_models_are_shipped():
    assert {"quadratic", "quadratic_nosec"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_loads_and_runs_at_n2_and_n1000(name):
    net, card = load_pretrained(name)
    assert card["iterations_run"] >= 1 and card["preset"]
    for n in (2, 1000):
        q, x0 = random_quadratics(n, 2, generator=torch.Generator().manual_seed(n), max_cond=None,
                                  dtype=torch.float32)
        tr = run(LSR1Solver(model=net), q, x0, 5)
        assert tr.x.shape == (6, 2, n)
        assert torch.isfinite(tr.x).all()  # diverged rows are frozen at a finite point and marked
        assert len(tr.reason) == 2


def test_quadratic_model_beats_tuned_gradient_descent_at_n10():
    net, _ = load_pretrained("quadratic")
    q64, x064 = quadratic_split("test", dtype=torch.float64)
    fstar = q64.min_value()
    lr, gd = tuned_gd(q64, x064, fstar, steps=20)
    tr = run(LSR1Solver(model=net), q64.to(dtype=torch.float32), x064.float(), 20)
    lsr1_gap = (tr.f[-1].double() - fstar).mean()
    gd_gap = (gd.f[-1] - fstar).mean()
    assert not tr.diverged.any()
    assert lsr1_gap < 0.8 * gd_gap, (float(lsr1_gap), float(gd_gap), lr)


def test_the_profile_models_are_shipped():
    """Table 7's per-task models at N = 100, with and without the secant penalty."""
    assert {"profile_quadratic", "profile_quadratic_nosec", "profile_rosenbrock", "profile_rosenbrock_nosec",
            "profile_rastrigin", "profile_rastrigin_nosec"} <= set(SHIPPED)
    for name in SHIPPED:
        if name.startswith("profile_"):
            _, card = load_pretrained(name)
            assert card["train_config"]["n"] == 100 and card["train_config"]["batch"] == 8
            assert card["trained_by_commit"] and card["iterations_run"] >= 1
            # a run that stopped early (meta-training diverged) says so; the others ran what was asked
            assert card["training_stopped_early"] or card["iterations_run"] == card["iterations_requested"]


def test_profile_quadratic_model_beats_tuned_gradient_descent_at_n10():
    """The N = 100 quadratic model on the same 32 test quadratics (N = 10) as the C.2.1 model."""
    net, _ = load_pretrained("profile_quadratic")
    q64, x064 = quadratic_split("test", dtype=torch.float64)
    fstar = q64.min_value()
    lr, gd = tuned_gd(q64, x064, fstar, steps=20)
    tr = run(LSR1Solver(model=net), q64.to(dtype=torch.float32), x064.float(), 20)
    assert not tr.diverged.any()
    assert (tr.f[-1].double() - fstar).mean() < (gd.f[-1] - fstar).mean(), lr


def test_profile_rosenbrock_model_beats_tuned_gradient_descent_after_100_steps():
    """The N = 100 Rosenbrock model on 8 fresh starts from the suite's distribution (U[-2, 2]^100), against
    gradient descent with the step the profile grid picks for these problems."""
    from lsr1_core.objectives import Rosenbrock, family_starts
    from lsr1_core.solvers import make_solver
    from lsr1_core.solvers.tuning import tune_lr

    obj = Rosenbrock(100)
    x0 = family_starts("rosenbrock", 100, 8, torch.Generator().manual_seed(2024))
    lr, _ = tune_lr("gd", [(obj, x0)], steps=100)
    gd = run(make_solver("gd", lr=lr), obj, x0, 100)
    net, _ = load_pretrained("profile_rosenbrock")
    tr = run(LSR1Solver(model=net.double()), obj, x0, 100)
    assert not tr.diverged.any() and not gd.diverged.any()
    assert tr.f[-1].mean() < gd.f[-1].mean(), (float(tr.f[-1].mean()), float(gd.f[-1].mean()), lr)
