"""experiments.mlp_peers: the default optimizer on small neural networks, against torch.optim.LBFGS."""
import json

import pytest

from experiments import mlp_peers


def test_runs_count_every_closure_call_and_respect_the_budget():
    for name in mlp_peers.OPTIMIZERS:
        losses = mlp_peers.fit(name, 0, "classification", 40)
        assert 1 <= len(losses) <= 40
        assert min(losses) < losses[0]  # every optimizer makes progress on the separable problem
    # the default's best loss never rises above its start, and it converges on the separable classification
    h = mlp_peers.fit("default", 1, "classification", 300)
    assert min(h) < 1e-6 * h[0]
    assert mlp_peers.first_below(h, 1e-3) is not None and mlp_peers.first_below([1.0, 0.5], 0.1) is None


def test_problems_are_reproducible_from_their_seed():
    m1, X1, f1 = mlp_peers.problem(3, "regression")
    m2, X2, f2 = mlp_peers.problem(3, "regression")
    assert float(f1(m1(X1))) == float(f2(m2(X2)))
    assert float(f1(m1(X1))) != float(mlp_peers.problem(4, "regression")[2](mlp_peers.problem(4, "regression")[0](
        mlp_peers.problem(4, "regression")[1])))


def test_report_is_written(tmp_path):
    assert mlp_peers.main(["--seeds", "1", "--budget", "20", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "results_mlp_peers.md").read_text()
    assert "## classification" in md and "LSR1Optimizer(params)" in md
    data = json.loads((tmp_path / "results" / "mlp_peers.json").read_text())
    assert set(data["summary"]) >= {"regression", "classification", "seeds"}
    assert all(len(v) == 1 for v in data["runs"]["regression"].values())


@pytest.mark.parametrize("args", [["--seeds", "0"], ["--budget", "1"], ["--seeds", "x"]])
def test_bad_arguments_are_refused(args, tmp_path):
    with pytest.raises(SystemExit) as e:
        mlp_peers.main(args + ["--out", str(tmp_path)])
    assert e.value.code == 2
