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
