"""The peers benchmark (issue 23): evaluations counted where they happen, performance-profile areas, the MGH set."""
from __future__ import annotations

import math

import pytest
import torch

from experiments import peers
from lsr1_core.objectives.mgh import MGH_FUNCTIONS, mgh_function


def test_profile_area_by_hand():
    ev = {"a": [10, 10, None], "b": [20, 10, 40]}
    area = peers.profile_area(ev, grid=5001)
    # a: ratio 1 on two of three problems, never solves the third -> 2/3 over [0, 5]
    assert area["a"] == pytest.approx(5 * 2 / 3, abs=1e-3)
    # b: ratio 2 (log2 = 1) on the first, 1 on the second and third -> 2/3 on [0, 1), 1 from 1 on
    assert area["b"] == pytest.approx(2 / 3 + 4, abs=2e-3)


@pytest.mark.parametrize("name", sorted(MGH_FUNCTIONS))
def test_mgh_minimum_and_start(name):
    cls = MGH_FUNCTIONS[name]
    obj = mgh_function(name, None if cls.fixed_dim else 10)
    x0 = obj.standard_start()
    f0, g0 = obj.value_and_grad(x0)
    assert float(f0[0]) > 0 and torch.isfinite(g0).all()
    known = {"brown_badly": [[1e6, 2e-6]], "beale": [[3.0, 0.5]], "helical": [[1.0, 0.0, 0.0]],
             "box3d": [[1.0, 10.0, 1.0]]}
    if name in known:
        assert float(obj.value(torch.tensor(known[name], dtype=torch.float64))[0]) == pytest.approx(0, abs=1e-20)
    if name in ("ext_rosenbrock", "var_dim", "brown_almost"):
        assert float(obj.value(torch.ones(1, 10, dtype=torch.float64))[0]) == pytest.approx(0, abs=1e-20)


def test_every_solver_is_counted_alike_and_solves_an_easy_problem():
    obj = mgh_function("beale")
    x0 = obj.standard_start()
    for s in peers.SOLVERS:
        r = peers.run_one(s, obj, x0, 0.0, 100)
        assert r["error"] is None, (s, r["error"])
        assert r["evals_to_solve"] is not None and 3 <= r["evals_to_solve"] <= r["evals"] <= 1000, (s, r)
        assert r["best_gap"] <= 1e-7 * r["gap0"]


def test_budget_stops_a_solver_and_is_recorded():
    obj = mgh_function("ext_rosenbrock", 10)
    r = peers.run_one("qn", obj, obj.standard_start(), 0.0, 2)  # budget 10 × 2 = 20 evaluations
    assert r["evals"] <= 20 and (r["budget_exhausted"] or r["evals"] < 20)
    assert r["evals_to_solve"] is None and not math.isnan(r["gap0"])


_ANDREI_MINIMISERS = {  # x* of the functions whose minimiser is known in closed form (N = 10)
    "ext_white_holst": lambda n: torch.ones(n), "ext_beale": lambda n: torch.tensor([3.0, 0.5] * (n // 2)),
    "raydan1": lambda n: torch.zeros(n), "raydan2": lambda n: torch.zeros(n),
    "diagonal2": lambda n: -torch.log(torch.arange(1, n + 1, dtype=torch.float64)),
    "hager": lambda n: torch.log(torch.arange(1, n + 1, dtype=torch.float64).sqrt()),
    "tridia": lambda n: 0.5 ** torch.arange(n, dtype=torch.float64), "arwhead": lambda n: torch.cat(
        [torch.ones(n - 1), torch.zeros(1)]), "fletchcr": lambda n: torch.cat([torch.zeros(1), -torch.ones(n - 1)]),
    "nondquar": lambda n: torch.zeros(n), "dqdrtic": lambda n: torch.zeros(n), "liarwhd": lambda n: torch.ones(n),
    "quartc": lambda n: torch.arange(1, n + 1, dtype=torch.float64), "genhumps": lambda n: torch.zeros(n),
    "chained_wood": lambda n: torch.ones(n), "ext_hiebert": lambda n: torch.tensor([10.0, 5000.0] * (n // 2)),
}


@pytest.mark.parametrize("name", sorted(_ANDREI_MINIMISERS))
def test_andrei_minimum_is_attained_and_the_start_is_worse(name):
    from experiments.andrei_functions import AndreiFunction

    n = 12 if name == "chained_wood" else 10
    obj = AndreiFunction(name, n)
    xs = _ANDREI_MINIMISERS[name](n).to(torch.float64).view(1, -1)
    f_star, g_star = obj.value_and_grad(xs)
    assert float(f_star[0]) == pytest.approx(obj.f_star(), rel=1e-12, abs=1e-12)
    assert float(g_star.abs().max()) < 1e-8
    assert float(obj.value(obj.standard_start())[0]) > obj.f_star() + 1e-3


def test_andrei_bad_names_and_sizes_are_refused():
    from experiments.andrei_functions import AndreiFunction
    from lsr1_core.errors import ShapeError, UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown function"):
        AndreiFunction("rosenbrok", 10)
    with pytest.raises(ShapeError, match="multiple of 4"):
        AndreiFunction("chained_wood", 10)
    with pytest.raises(ShapeError, match="N ≥ 3"):
        AndreiFunction("nondquar", 2)
    with pytest.raises(ShapeError):
        AndreiFunction("raydan1", True)


def test_peers_problem_sets_include_andrei_once_per_distinct_start():
    probs = peers.problems(sets=("andrei",), dims=(10,))
    names = {(p[1], p[5]) for p in probs}
    assert ("fletchcr_n10", 1.0) in names and ("fletchcr_n10", 10.0) not in names  # start 0: one multiplier
    assert ("raydan1_n100", 100.0) in names and len(names) == len(probs)
