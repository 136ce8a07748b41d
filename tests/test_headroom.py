"""The headroom benchmark (experiments.headroom): its families, its untrained start and its outputs."""
import json
import math

import torch

from experiments import headroom as hr
from lsr1_core.learned import LSR1Solver
from lsr1_core.meta.budget import run_budget
from lsr1_core.objectives import Rosenbrock, family_starts

torch.set_num_threads(1)


def test_narrow_untrained_net_has_the_cards_iterates():
    # the card's output heads are zero, so its iterates do not depend on the network's width
    card = LSR1Solver(checkpoint=hr.CARD)
    heads = [card.net.vector_generator.fc2, card.net.lr_generator.fc2]
    assert all(bool((m.weight == 0).all()) and bool((m.bias == 0).all()) for m in heads)
    obj = Rosenbrock(20)
    x0 = family_starts("rosenbrock", 20, 3, torch.Generator().manual_seed(0))
    wide = run_budget(card, obj, x0, 40)
    narrow = run_budget(hr.qn_solver(), obj, x0, 40)
    assert wide.f.shape == narrow.f.shape
    assert torch.allclose(wide.f, narrow.f, rtol=1e-9, atol=0.0)
    assert torch.equal(wide.cum, narrow.cum)


def test_lowrank_rosenbrock_minimum_and_structure():
    obj, x0, fstar = hr.lowrank_rosenbrock_family(3, torch.Generator().manual_seed(1), n=30, k=4)
    xs = obj.minimizer()
    f, g = obj.value_and_grad(xs)
    assert float(f.abs().max()) < 1e-20 and float(g.abs().max()) < 1e-10
    assert torch.equal(fstar, torch.zeros(3, dtype=torch.float64))
    assert bool((obj.value(x0) > 1.0).all())
    # across the subspace it is the unit quadratic: moving orthogonally to V by d raises f by ½‖d‖²
    d = torch.randn(3, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    d = d - torch.einsum("bnk,bk->bn", obj.V, torch.einsum("bnk,bn->bk", obj.V, d))
    assert torch.allclose(obj.value(xs + d), 0.5 * (d * d).sum(-1), rtol=1e-10)


def test_draw_is_seeded_and_scaled_like_the_qn_presets():
    fam = hr.FAMILIES["quadratic_n2"]
    obj, y0, fstar, base, x0, c = hr._draw(fam, 123)
    obj2, y1, fstar2, _, _, _ = hr._draw(fam, 123)
    assert torch.equal(y0, y1) and torch.equal(fstar, fstar2)
    assert bool((c >= 1e-3).all() and (c <= 1e3).all())
    # f̃(y0) = c·f(x0), and f̃* = c·f*
    assert torch.allclose(obj.value(y0), c * base.value(x0), rtol=1e-12)
    assert torch.allclose(obj.value(obj.minimizer()), fstar, rtol=1e-9, atol=1e-12 * float(c.max()))


def test_command_writes_json_and_markdown(tmp_path):
    hr.main(["--seeds", "1", "--out", str(tmp_path), "--families", "quadratic_n2"])
    R = json.loads((tmp_path / "results" / "headroom.json").read_text())
    (F,) = R["families"]
    assert F["family"] == "quadratic_n2" and F["held_out_seeds"] != F["tuning_seeds"]
    labels = [r["method"] for r in F["rows"]]
    assert labels[0] == "qn" and "lbfgs" in labels
    qn = F["rows"][0]["per_budget"]
    # SR1 is exact on N = 2 quadratics: the untrained start reaches the floor within 8 evaluations
    assert qn[-1]["mean"] < -10
    lb = next(r for r in F["rows"] if r["method"] == "lbfgs")
    assert lb["mean_over_budgets"]["vs_qn"]["mean"] > 1  # L-BFGS is far behind at these budgets
    md = (tmp_path / "results_learning.md").read_text()
    assert "python -m experiments.headroom" in md and "quadratic_n2" in md
    assert all(math.isfinite(c["mean"]) for r in F["rows"] for c in r["per_budget"])


def test_train_command_fits_a_scalar_and_reports_held_out(tmp_path):
    hr.main(["--train", "quadratic_n2", "--params", "gamma", "--iterations", "1", "--seeds", "1",
             "--out", str(tmp_path)])
    T = json.loads((tmp_path / "results" / "learning_quadratic_n2_gamma.json").read_text())
    assert T["params"] == ["gamma"] and len(T["history"]["thetas"]) == 2
    assert T["trained"]["step_scale"] == 1.0  # a scalar not trained stays at the untrained value
    assert [r["budget"] for r in T["held_out"]] == list(hr.FAMILIES["quadratic_n2"].budgets)
    # the best θ by validation is never worse than the start on the validation set
    h = T["history"]
    assert h["val_loss"][h["best_iteration"]] <= h["val_loss"][0]
    md = (tmp_path / "results_learning.md").read_text()
    assert "ES-trained scalars on quadratic_n2" in md
