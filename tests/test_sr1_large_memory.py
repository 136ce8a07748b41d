"""Classical SR1 with a large memory: the min-eigenvalue diagnostic must not crash the run."""
from __future__ import annotations

import torch

from lsr1_core.objectives import profile_suite
from lsr1_core.solvers import make_solver, run


def test_sr1_memory_64_on_an_ill_conditioned_quadratic_runs_and_converges():
    # Before the fix, LAPACK's eigh failed to converge on the nearly rank-deficient H of step ~50
    # (memory 64, N = 50) and the diagnostic raised LinAlgError, ending the run.
    p = profile_suite(dims=[50], families=["quad_cond100"])[0]
    tr = run(make_solver("sr1", memory=64, line_search="armijo"), p.objective, p.x0, 100)
    assert not bool(tr.diverged.any())
    assert float((tr.x[-1] - p.x_star()).norm()) < 1e-6
    eig = tr.extras["min_eig"]
    assert eig.shape[0] == 100 and bool(torch.isfinite(eig[:20]).all())
