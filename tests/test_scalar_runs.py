"""Issue 22: scalar meta-training as a runs-manager problem kind, and the GLM families it learns on."""
import json

import pytest
import torch

from lsr1_core.errors import LSR1Error
from lsr1_core.meta import Trainer, registry
from lsr1_core.meta.scalar_problem import SCALAR_PRESETS, ScalarProblem, ScalarTrainConfig, scalar_preset
from lsr1_core.objectives.glm import least_squares_family, softmax_family


@pytest.mark.parametrize("family", [least_squares_family, softmax_family])
def test_glm_gradients_hessians_and_minimisers(family):
    obj, x0 = family(3, torch.Generator().manual_seed(0))
    x = x0.clone().requires_grad_(True)
    f_auto = obj.value(x)
    (g_auto,) = torch.autograd.grad(f_auto.sum(), x)
    f, g = obj.value_and_grad(x0)
    assert torch.allclose(f, f_auto.detach()) and torch.allclose(g, g_auto, rtol=1e-10, atol=1e-12)
    H = obj.hessian(x0)
    v = torch.randn_like(x0)
    eps = 1e-6
    fd = (obj.value_and_grad(x0 + eps * v)[1] - obj.value_and_grad(x0 - eps * v)[1]) / (2 * eps)
    assert torch.allclose(torch.einsum("bij,bj->bi", H, v), fd, rtol=1e-5, atol=1e-8)
    xs = obj.minimizer()
    gs = obj.value_and_grad(xs)[1]
    assert float(gs.norm(dim=-1).max()) < 1e-9
    assert bool((obj.min_value() < f).all())
    # badly scaled: the Hessian's diagonal spans orders of magnitude
    d = torch.diagonal(H, dim1=1, dim2=2)
    assert float((d.max(-1).values / d.min(-1).values).min()) > 1e2


def test_glm_families_refuse_bad_arguments():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(LSR1Error, match="positive integers"):
        least_squares_family(0, g)
    with pytest.raises(LSR1Error, match="decades"):
        softmax_family(2, g, decades=-1.0)


def test_scalar_kind_is_registered_and_its_config_refuses_nonsense():
    k = registry.get("scalars")
    assert k.config_class is ScalarTrainConfig and set(k.presets) == set(SCALAR_PRESETS)
    assert registry.kind_of_config(scalar_preset("qn_scalars_logistic")).kind == "scalars"
    for bad in ({"family": "mnist"}, {"params": ["nope"]}, {"lr": 0.0}, {"batch": 0}, {"iterations": -1},
                {"device": "cuda"}, {"sigma": float("inf")}, {"train_pool": True}):
        with pytest.raises(LSR1Error):
            scalar_preset("qn_scalars_logistic", **bad)


def test_a_scalar_run_trains_checkpoints_and_resumes(tmp_path):
    """Four iterations on logistic regression: the ES step moves β up, validation is recorded, the best checkpoint
    is an ordinary qn card with the learned scalars in its config, and a resume continues from the checkpoint."""
    from lsr1_core.learned.io import load_model
    from lsr1_core.pretrained import learned_status

    cfg = scalar_preset("qn_scalars_logistic", iterations=4, val_every=2, ckpt_every=2, lr=0.1)
    tr = Trainer(cfg, tmp_path / "run", problem=ScalarProblem)
    res = tr.fit(progress=False)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [0, 1, 2, 3, 4]
    assert lines[0]["val_diag"] == 0.0 and lines[-1]["theta_diag"] > 0.1
    assert res.best_val < lines[0]["val_loss"]
    net, card = load_model(tmp_path / "run" / "best")
    assert net.config.form == "qn" and net.config.diag > 0.1
    assert card["trained_scalars"]["family"] == "logistic" and card["family"] == "logistic"
    assert learned_status("best", tmp_path / "run").startswith("trained scalars on logistic")
    tr2 = Trainer.resume(tmp_path / "run", iterations=6, problem=ScalarProblem)
    assert tr2.iteration == 4 and torch.equal(tr2.net.theta, tr.net.theta)


def test_the_meta_training_page_offers_scalar_presets_with_their_own_form(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LSR1_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("LSR1_PAGE_DIRECT", "1")
    from pathlib import Path

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "views" / "training.py"),
                           default_timeout=120)
    at.run()
    at.selectbox(key="train_preset").set_value("qn_scalars_logistic").run()
    assert not at.exception
    assert [m.label for m in at.multiselect] == ["learned scalars"]
    assert at.multiselect[0].value == ["diag", "gamma", "decay"]
    labels = [n.label for n in at.number_input]
    assert "ES σ" in labels and "N (dimension)" not in labels
    at.multiselect[0].set_value([]).run()
    assert any("choose at least one scalar" in e.value for e in at.error)
    assert at.button(key="train_launch").disabled
    # the held-out panel lists the shipped qn cards
    assert any(sb.label == "Checkpoint" and any("qn_logistic" in o for o in sb.options) for sb in at.selectbox)


def test_training_curves_of_a_scalar_run():
    from lsr1_core.viz.training import training_curves

    metrics = [{"iteration": 0, "val_loss": -1.8, "val_diag": 0.0, "val_gamma_factor": 0.5, "val_diag_decay": 0.9},
               {"iteration": 1, "meta_loss": -1.9}, {"iteration": 2, "meta_loss": -2.0, "val_loss": -2.1,
                                                     "val_diag": 0.1, "val_gamma_factor": 0.49, "val_diag_decay": 0.9}]
    fig = training_curves(metrics, kind="scalars")
    names = [t.name for t in fig.data]
    assert "validation meta-loss" in names and "β (diagonal metric)" in names
    beta = next(t for t in fig.data if t.name == "β (diagonal metric)")
    assert list(beta.y) == [0.0, 0.1]
