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
