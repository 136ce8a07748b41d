"""experiments.optimizer_cost: the wall-time benchmark of LSR1Optimizer beside torch.optim.LBFGS runs, counts every
closure call, and its time-to-solution table solves the problem with each optimizer's default tolerances."""
import pytest

from experiments import optimizer_cost


def test_every_row_reaches_the_same_loss_and_counts_its_calls():
    ref = optimizer_cost.measure(300, "lbfgs", steps=20)
    for method in ("qn_bfgs", "qn_bfgs_batched", "qn", "lbfgs_one_call"):
        r = optimizer_cost.measure(300, method, steps=20)
        assert r["calls"] >= 1 and r["note"] == ""
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-5), method
        assert 0 <= r["own_ms_per_eval"] <= r["ms_per_eval"]


def test_time_to_solution_stops_where_the_tolerances_say():
    ref = optimizer_cost.time_to_solution(300, "lbfgs_one_call")
    for method in ("qn_bfgs", "qn"):
        r = optimizer_cost.time_to_solution(300, method)
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-6), method
        assert r["calls"] < 60  # it stopped: the problem is solved in a few dozen evaluations at most


def test_report_has_all_tables(tmp_path):
    assert optimizer_cost.main(["--sizes", "200", "--steps", "5", "--repeat", "1", "--pairs", "3",
                                "--out", str(tmp_path)]) == 0
    md = (tmp_path / "benchmarks_optimizer.md").read_text()
    assert "÷ LBFGS (one call) per evaluation" in md and "## Time to a solution" in md and "## The spread" in md
    # seven per-evaluation rows (the paper form's too, at this size), one of the own-step allowance, three to a
    # solution, one of the spread
    assert md.count("| 200 |") == 12
    # the allowance table restates the first table per step: the default's own ms per step is its own ms per
    # evaluation × its evaluations ÷ the 5 steps, and the allowance is 1.5 × LBFGS's ms per evaluation × those
    # evaluations less the default's closure time, per step
    first = {cells[1]: cells for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines()
                                           if line.startswith("| 200 |"))}
    qn = first["**LSR1Optimizer default** (no card: untrained `LSR1Config.qn_bfgs()`)"]
    lb = first["torch.optim.LBFGS (strong Wolfe, history 10: the default's memory)"]
    step = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines()
            if line.startswith("| 200 |") and line.count("/") == 2][0]
    ms, own, calls, ref = float(qn[2]), float(qn[3]), int(qn[4]), float(lb[2])
    assert float(step[1]) == pytest.approx(own * calls / 5, abs=0.002)
    assert float(step[2]) == pytest.approx((1.5 * ref - (ms - own)) * calls / 5, abs=0.005)
    row = [line for line in md.splitlines() if line.startswith("| 200 | 3 |")]
    cells = [c.strip() for c in row[0].split("|")[1:-1]]
    mid, low, high = (float(c.rstrip("×")) for c in cells[2:5])
    assert 0 < low <= mid <= high
    assert optimizer_cost.main(["--sizes", "200", "--steps", "5", "--repeat", "1", "--pairs", "0",
                                "--out", str(tmp_path)]) == 0
    assert "## The spread" not in (tmp_path / "benchmarks_optimizer.md").read_text()


def test_interleaved_ratio_is_a_median_of_pairs():
    r = optimizer_cost.interleaved(200, 3, steps=5)
    assert r["pairs"] == 3 and 0 < r["low"] <= r["median"] <= r["high"]
    assert optimizer_cost.default_pairs(1000) == 21 and optimizer_cost.default_pairs(10**6) == 3


@pytest.mark.parametrize("args", [["--sizes", "0"], ["--repeat", "0"], ["--steps", "x"], ["--pairs", "-1"],
                                  ["--pairs", "two"]])
def test_bad_arguments_are_refused(args, tmp_path):
    with pytest.raises(SystemExit):
        optimizer_cost.main(args + ["--out", str(tmp_path)])
