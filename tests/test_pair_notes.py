"""Issue 23 item 5: the Curvature page explains the qn form's secant residual — steps whose pair was skipped,
entered as a BFGS update or restarted are marked with a one-line reason."""
from __future__ import annotations

import numpy as np
import torch

from experiments import generality
from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
from lsr1_core.objectives import Rosenbrock
from lsr1_core.solvers import make_solver, run
from lsr1_core.viz.explore import secant_series
from lsr1_core.viz.lessons import pair_note, pair_notes
from lsr1_core.viz.plots import mark_events, series_figure


def _rosen(**rules):
    return run(LSR1Solver(model=LSR1Net(LSR1Config.qn(**rules)).double()), Rosenbrock(),
               torch.tensor([[-1.2, 1.0]], dtype=torch.float64), 30)


def test_bfgs_pairs_are_marked_and_satisfy_the_secant_condition():
    tr = _rosen()
    notes = pair_notes(tr)
    sec = secant_series(tr)
    bfgs = [k for k, n in notes.items() if n.startswith("entered as a BFGS update")]
    assert len(bfgs) >= 3
    assert all(sec[k] < 1e-8 for k in bfgs if np.isfinite(sec[k]))
    plain = [k for k in range(25) if k not in notes]
    assert plain and all(sec[k] < 1e-6 for k in plain if np.isfinite(sec[k]))  # SR1 pairs: satisfied too


def test_skipped_pairs_are_marked_where_the_residual_jumps():
    tr = _rosen(fallback="skip")
    notes = pair_notes(tr)
    sec = secant_series(tr)
    skipped = [k for k, n in notes.items() if n.startswith("skipped")]
    assert skipped
    assert all(sec[k] > 1e-3 for k in skipped if np.isfinite(sec[k]))  # the jumps a student saw, explained
    big = [k for k in range(tr.steps - 1) if np.isfinite(sec[k]) and sec[k] > 1e-3]
    assert set(big) <= set(notes)  # every jump has its reason


def test_restart_is_marked():
    obj, x0, _ = generality.build_problem("logsumexp", 100, "base", 0)
    tr = run(LSR1Solver(model=LSR1Net(LSR1Config.qn()).double()), obj, x0[1:2].clone(), 20)
    restarts = [k for k, n in pair_notes(tr).items() if n.startswith("restart")]
    assert restarts == [k for k in range(20) if bool(tr.extras["restarted"][k, 0] > 0)]


def test_classical_solvers_have_no_notes_and_the_marks_land_on_the_line():
    lb = run(make_solver("lbfgs", memory=4), Rosenbrock(), torch.tensor([[-1.2, 1.0]], dtype=torch.float64), 10)
    assert pair_notes(lb) == {} and pair_note(lb, 0) is None
    tr = _rosen(fallback="skip")
    sec = secant_series(tr)
    notes = pair_notes(tr)
    fig = mark_events(series_figure({"qn": sec}, 3, "residual", log=True), "qn", sec, notes)
    marks = [d for d in fig.data if d.mode == "markers"]
    assert marks
    for d in marks:
        for x, y, text in zip(d.x, d.y, d.hovertext):
            assert y == sec[x - 1] and text == notes[x - 1]


def test_converged_pairs_are_marked_as_rounding_noise():
    """The default 2-D quadratic view: the qn form solves it in 3 steps and goes on to f ≈ 1e-240, where p and q
    underflow and the textbook residual jumps to ~1 (what a student saw on steps 9–16); those steps are marked."""
    from lsr1_core.objectives import teaching_function
    obj = teaching_function("quadratic", cond=10.0, angle=30.0)
    tr = run(LSR1Solver(model=LSR1Net(LSR1Config.qn()).double()), obj,
             torch.tensor([[-2.5, 1.5]], dtype=torch.float64), 20)
    notes = pair_notes(tr)
    sec = secant_series(tr)
    eps = torch.finfo(torch.float64).eps
    for k in range(19):
        conv = float(tr.g[k, 0].norm()) <= eps * float(tr.g[0, 0].norm())
        assert conv == (k in notes and notes[k].startswith("converged"))
        if np.isfinite(sec[k]) and sec[k] > 1e-6:
            assert k in notes  # every jump is explained
    assert any(n.startswith("converged") for n in notes.values())
