"""The scale-free (qn) form of L-SR1 as an HMR update module: one network on z = [θ, β]."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lsr1_core.hmr import AnnyBody
from lsr1_core.hmr import test_set as make_test_set
from lsr1_core.hmr.data import CameraConfig
from lsr1_core.hmr.models import HMRModel, HMRModelConfig, HMRObjective, load_hmr_model, save_hmr_model
from lsr1_core.learned.model import LSR1Config


@pytest.fixture(scope="module")
def body():
    return AnnyBody()


def _qn_model(body, seed=0):
    torch.manual_seed(seed)
    return HMRModel(body.signature(), HMRModelConfig(method="lsr1", width=16, lsr1=LSR1Config.qn(memory=4).to_dict()))


def test_qn_fit_never_raises_f_and_starts_as_sr1(body):
    m = _qn_model(body)
    assert m.is_qn and hasattr(m, "lsr1") and not hasattr(m, "lsr1_pose")
    batch = make_test_set(body, n=8)
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    with torch.no_grad(), m.inference(rows=8):
        res = m.fit(obj, 5)
    f = torch.stack([v.detach() for v in res.f])  # (6, B)
    assert torch.isfinite(f).all()
    assert (f[1:] <= f[:-1] + 1e-6).all(), "the Armijo safeguard must never let f rise"
    assert float(f[-1].mean()) < 0.9 * float(f[0].mean())
    # untrained: the corrections are zero, so the learned departure from SR1 is exactly 0
    assert all(float(d.abs().max()) == 0.0 for d in res.departure)
    assert res.evals[0] >= 2  # the curvature probe is counted in the first step
    assert len(res.poses) == 6 and res.poses[-1].shape == (8, body.pose_dim)


def test_qn_checkpoint_round_trip_keeps_form_and_iterates(body, tmp_path):
    m = _qn_model(body, seed=1)
    with torch.no_grad():  # a non-trivial model: perturb the zero heads
        for head in (m.lsr1.vector_generator.fc2, m.lsr1.lr_generator.fc2):
            head.weight.normal_(std=0.05)
    save_hmr_model(tmp_path / "q", m)
    back, card = load_hmr_model(tmp_path / "q", body)
    assert card["config"]["lsr1"]["form"] == "qn" and back.is_qn
    batch = make_test_set(body, n=4)
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    with torch.no_grad(), m.inference(rows=4), back.inference(rows=4):
        a, b = m.fit(obj, 3), back.fit(obj, 3)
    assert torch.equal(a.poses[-1], b.poses[-1]) and torch.equal(a.shapes[-1], b.shapes[-1])


def test_qn_meta_gradient_reaches_the_heads(body):
    from lsr1_core.hmr.data import make_batch, PoseSampler, SampleConfig
    from lsr1_core.hmr.train import HMRTrainConfig, meta_loss
    m = _qn_model(body)
    cfg = HMRTrainConfig(method="lsr1", width=16, unroll=3, lsr1=LSR1Config.qn(memory=4).to_dict(),
                         train_initializer=True)
    g = torch.Generator().manual_seed(0)
    pose, shape = PoseSampler(body, "train", seed=0).draw(6, g)
    batch = make_batch(body, pose, shape, g, CameraConfig(), SampleConfig())
    loss, stats = meta_loss(m, body, batch, cfg)
    loss.backward()
    grads = [p.grad for p in m.lsr1.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(t).all() for t in grads)
    assert sum(float(t.abs().sum()) for t in grads) > 0
    assert stats["secant"] == 0.0  # u = 0 at the start: no departure from SR1


def test_training_cli_qn_form(tmp_path):
    from lsr1_core.hmr.train import main
    small = ["--batch", "8", "--width", "16", "--val-every", "2"]
    assert main(["--stage", "initializer", "--run-dir", str(tmp_path / "init"), "--iterations", "1"] + small) == 0
    assert main(["--method", "lsr1", "--form", "qn", "--initializer", str(tmp_path / "init"),
                 "--run-dir", str(tmp_path / "q"), "--iterations", "2", "--unroll", "2"] + small) == 0
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    assert cfg["lsr1"]["form"] == "qn"
    recs = [json.loads(l) for l in (tmp_path / "q" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["meta_loss"]) for r in recs[1:]) and "val_pa_mpjpe" in recs[-1]
    with pytest.raises(SystemExit, match="--form qn applies to --method lsr1"):
        main(["--method", "lgd", "--form", "qn", "--initializer", str(tmp_path / "init"),
              "--run-dir", str(tmp_path / "bad")] + small)


def test_step_table_experiment_starts_as_the_untrained_form_and_learns(body):
    """experiments.qn_hmr_steps: with its table at zero it is the untrained qn form (same iterates), and
    the 3-D loss reaches the table through the safeguarded steps (non-zero gradient)."""
    from experiments.qn_hmr_steps import StepTable
    from lsr1_core.learned import LSR1Net, LSR1Solver
    from lsr1_core.solvers import run

    init = _qn_model(body).initializer.eval()
    batch = make_test_set(body, n=6)
    table = StepTable(3, body.pose_dim + body.shape_dim)
    obj, zs = table.fit(body, init, batch, 3)
    # (the table fits with a meta-gradient through the steps, where the safeguard never lengthens: compare with
    # the untrained form without lengthening)
    ref = run(LSR1Solver(model=LSR1Net(LSR1Config.qn(memory=8, extrapolate=0))), obj, zs[0].detach(), 3)
    torch.testing.assert_close(zs[-1].detach(), ref.x[-1], rtol=1e-5, atol=1e-6)
    P = body.pose_dim
    loss = (body.keypoints(zs[-1][:, :P], zs[-1][:, P:]) - body.keypoints(zs[0][:, :P], zs[0][:, P:]).detach()).abs().mean()
    loss.backward()
    assert table.A.grad is not None and float(table.A.grad.abs().sum()) > 0


def test_horizon_experiment_records_every_method_from_the_same_start():
    """experiments.qn_hmr_horizon: all rows from the shared initializer start at one PA-MPJPE, the
    ground-truth rows at zero error, nothing diverges, and the table reports the first step under the target."""
    from experiments.qn_hmr_horizon import evaluate, first_reach, markdown

    res = evaluate(n_test=3, steps=15, gt_steps=2, every=5, log=lambda *a, **k: None)
    runs = res["runs"]
    assert set(runs) == {"lsr1_qn", "lbfgs", "adam", "lsr1_qn_from_truth", "lbfgs_from_truth"}
    starts = {runs[n]["pa_mpjpe"][0] for n in ("lsr1_qn", "lbfgs", "adam")}
    assert len(starts) == 1 and next(iter(starts)) > 20
    for n in ("lsr1_qn_from_truth", "lbfgs_from_truth"):
        assert runs[n]["pa_mpjpe"][0] < 1e-3 and runs[n]["step"][-1] == 2
    for n in ("lsr1_qn", "lbfgs", "adam"):
        r = runs[n]
        assert r["diverged"] == 0 and r["step"] == [0, 1, 2, 4, 5, 8, 10, 15]
        assert all(np.isfinite(r["pa_mpjpe"])) and r["f"][-1] < r["f"][0]
    assert first_reach({"step": [0, 1, 4], "pa_mpjpe": [90.0, 95.0, 93.0]}, 93.6) == 4
    assert first_reach({"step": [0, 1], "pa_mpjpe": [90.0, 95.0]}, 93.6) is None
    md = markdown(res, "cmd")
    assert "first step ≤ 93.6 mm" in md and "started at the ground truth" in md


def test_metric_experiment_starts_as_the_qn_form_and_its_gradient_reaches_the_metric(body):
    """experiments.qn_hmr_metric: with M = I the iterates are the plain qn form's; the gradient in y is
    Mᵀ∇f (checked against autograd of f(z₀ + M(y − y₀))); the 3-D loss reaches M."""
    from experiments.qn_hmr_metric import Metric, fit
    from lsr1_core.learned import LSR1Net, LSR1Solver
    from lsr1_core.solvers import run

    init = _qn_model(body).initializer.eval()
    for p in init.parameters():
        p.requires_grad_(False)
    batch = make_test_set(body, n=4)
    N, P = body.pose_dim + body.shape_dim, body.pose_dim
    obj, zs = fit(body, init, batch, torch.eye(N), 3)
    ref = run(LSR1Solver(model=LSR1Net(LSR1Config.qn(memory=8))), obj, zs[0], 3)
    torch.testing.assert_close(zs[-1], ref.x[-1], rtol=1e-5, atol=1e-5)
    g = torch.Generator().manual_seed(0)
    M = torch.eye(N) + 0.1 * torch.randn(N, N, generator=g)
    met = Metric(obj, zs[0], M)
    y = met.y0 + 0.01 * torch.randn(4, N, generator=g)
    torch.testing.assert_close(met.to_z(met.y0), zs[0], rtol=1e-4, atol=1e-5)
    _, gy = met.value_and_grad(y)
    yy = y.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(met.value(yy).sum(), yy)
    torch.testing.assert_close(gy, auto, rtol=1e-4, atol=1e-7)
    Mg = torch.eye(N, requires_grad=True)
    _, zs = fit(body, init, batch, Mg, 3, grad=True)
    (body.keypoints(zs[-1][:, :P], zs[-1][:, P:]) - batch.joints3d.new_zeros(1)).abs().mean().backward()
    assert Mg.grad is not None and float(Mg.grad.abs().sum()) > 0
