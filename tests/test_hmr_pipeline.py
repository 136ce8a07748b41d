"""HMR pipeline: the embedded body model, mocap, samples, fitters, checkpoints, pretrained models."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lsr1_core.hmr import COCO18, PRETRAINED_DIR, AnnyBody, BodyModelError, load_pretrained
from lsr1_core.hmr import test_set as make_test_set
from lsr1_core.hmr.data import CameraConfig, SampleConfig, check_observation, make_batch, normalise_keypoints
from lsr1_core.hmr.models import HMRModel, HMRModelConfig, HMRObjective, load_hmr_model, save_hmr_model


@pytest.fixture(scope="module")
def body():
    return AnnyBody()


@pytest.fixture(scope="module")
def body64():
    return AnnyBody(dtype=torch.float64)


def test_fast_keypoints_equal_full_mesh_keypoints(body64):
    from lsr1_core.hmr.anny_body import _load_anny
    model, reg = _load_anny()
    g = torch.Generator().manual_seed(0)
    pose = 0.4 * torch.randn(3, body64.pose_dim, generator=g, dtype=torch.float64)
    shape = torch.rand(3, body64.shape_dim, generator=g, dtype=torch.float64)
    fast = body64.keypoints(pose, shape)
    verts = body64.vertices(pose, shape)
    assert verts.shape == (3, 13718, 3)
    full = reg({"vertices": verts})
    for name in ("nose", "left_wrist", "right_ankle", "left_ear"):
        assert torch.allclose(fast[:, COCO18.index(name)], full[:, reg.labels.index(name)], atol=1e-9)
    # neck is the mid-shoulder point
    mid = 0.5 * (full[:, reg.labels.index("left_shoulder")] + full[:, reg.labels.index("right_shoulder")])
    assert torch.allclose(fast[:, COCO18.index("neck")], mid, atol=1e-9)


def test_pose_moves_the_right_joints(body):
    from lsr1_core.hmr.anny_body import BODY_BONES
    pose = torch.zeros(1, body.pose_dim)
    rest = body.keypoints(pose, body.default_shape(1))
    bent = pose.clone()
    i = BODY_BONES.index("LeftForeArm")
    bent[0, 3 * i + 1] = 1.2
    kp = body.keypoints(bent, body.default_shape(1))
    moved = (kp - rest).norm(dim=-1)[0]
    assert moved[COCO18.index("left_wrist")] > 0.05
    assert moved[COCO18.index("right_wrist")] < 1e-6 and moved[COCO18.index("left_ankle")] < 1e-6
    # taller phenotype → longer body
    tall = body.keypoints(pose, torch.tensor([[0.5, 0.5, 0.5, 0.5, 1.0, 0.5]]))
    short = body.keypoints(pose, torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.0, 0.5]]))
    h = lambda k: float(k[0, COCO18.index("nose"), 2] - k[0, COCO18.index("left_ankle"), 2])  # noqa: E731
    assert h(tall) > h(short) + 0.1


def test_mocap_clips_and_splits(body):
    from lsr1_core.hmr.mocap import TEST_CLIPS, clip_names, mocap_poses, retarget_clip
    assert len(clip_names()) == 15
    train, owner_tr = mocap_poses("train")
    test, owner_te = mocap_poses("test")
    assert len(train) + len(test) == 1620
    assert set(owner_te) == set(TEST_CLIPS) and not set(owner_tr) & set(TEST_CLIPS)
    # a walking body is upright: head above hips above ankles (z up) in every frame
    walk = torch.tensor(retarget_clip("walk"), dtype=torch.float32)
    kp = body.keypoints(walk, body.default_shape(len(walk)))
    z = kp[..., 2]
    assert (z[:, COCO18.index("nose")] > z[:, COCO18.index("right_hip")] + 0.3).all()
    assert (z[:, COCO18.index("right_hip")] > z[:, COCO18.index("right_ankle")] + 0.4).all()
    # limbs keep their length under retargeting (rigid bones)
    L = (kp[:, COCO18.index("left_knee")] - kp[:, COCO18.index("left_ankle")]).norm(dim=-1)
    assert float(L.std() / L.mean()) < 0.02


def test_test_set_is_fixed_and_lgd_like(body):
    a, b = make_test_set(body, n=64), make_test_set(body, n=64)
    assert torch.equal(a.kp2d, b.kp2d) and torch.equal(a.pose, b.pose)
    drop = 1 - float(a.conf.mean())
    assert 0.1 < drop < 0.3
    assert (a.conf.sum(1) >= 6).all()
    assert (a.kp2d[a.conf == 0] == 0).all()
    vis = a.kp2d[a.conf > 0]
    assert (vis > 0).all() and (vis < 256).all()
    n = normalise_keypoints(a.kp2d, a.conf)
    assert float(n.min()) >= -1e-5 and float(n.max()) <= 1 + 1e-5
    assert (n[a.conf == 0] == 0.5).all()


def test_bad_observations_give_clear_errors(body):
    kp = torch.rand(2, 18, 2) * 100
    conf = torch.ones(2, 18)
    with pytest.raises(BodyModelError, match=r"\(B, 18, 2\)"):
        check_observation(kp[:, :17], conf)
    with pytest.raises(BodyModelError, match="fewer than 2"):
        check_observation(kp, torch.zeros(2, 18))
    bad = kp.clone()
    bad[1, 4, 0] = float("nan")
    with pytest.raises(BodyModelError, match="NaN"):
        HMRObjective(body, bad, conf, CameraConfig())
    conf2 = conf.clone()
    conf2[1, 4] = 0
    HMRObjective(body, bad, conf2, CameraConfig())  # a NaN on a missing joint is fine
    with pytest.raises(BodyModelError, match="pose must be"):
        body.keypoints(torch.zeros(2, 10), body.default_shape(2))


def test_checkpoint_for_another_body_model_is_refused(body, tmp_path):
    sig = dict(body.signature(), body_model="smpl", pose_dim=72, shape_dim=10)
    m = HMRModel(sig, HMRModelConfig(method="lsr1", width=16))
    save_hmr_model(tmp_path / "m", m)
    with pytest.raises(BodyModelError, match="trained for body model 'smpl'"):
        load_hmr_model(tmp_path / "m", body)
    # and a checkpoint for this body loads and keeps its weights
    m2 = HMRModel(body.signature(), HMRModelConfig(method="lgd", width=16))
    save_hmr_model(tmp_path / "m2", m2)
    back, card = load_hmr_model(tmp_path / "m2", body)
    assert card["config"]["method"] == "lgd"
    for (k, v), (k2, v2) in zip(m2.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_training_cli_runs_and_resumes(tmp_path):
    from lsr1_core.hmr.train import main
    small = ["--batch", "16", "--width", "32", "--val-every", "2"]
    assert main(["--stage", "initializer", "--run-dir", str(tmp_path / "init"), "--iterations", "2"] + small) == 0
    assert main(["--method", "lsr1", "--initializer", str(tmp_path / "init"), "--run-dir", str(tmp_path / "u"),
                 "--iterations", "2", "--unroll", "2"] + small) == 0
    assert main(["--run-dir", str(tmp_path / "u"), "--resume", "--iterations", "3"]) == 0
    recs = [json.loads(l) for l in (tmp_path / "u" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in recs] == [0, 1, 2, 3]
    assert all(np.isfinite(r["meta_loss"]) for r in recs[1:])
    assert "val_pa_mpjpe" in recs[-1]


@pytest.mark.parametrize("name", ["lsr1", "lgd", "lsr1_nosec"])
def test_pretrained_lowers_reprojection_error(body, name):
    models = load_pretrained(body)
    assert name in models, f"pretrained/{name} missing in {PRETRAINED_DIR}"
    from lsr1_core.hmr.compare import evaluate_model
    batch = make_test_set(body, n=64)
    steps = 8 if name != "lgd" else 4
    c = evaluate_model(models[name], body, batch, steps)
    assert c["reproj"][-1] < 0.9 * c["reproj"][0], c["reproj"]
    assert c["f"][-1] < c["f"][0]
    assert all(np.isfinite(v) for v in c["pa_mpjpe"])


def test_training_on_smpl_with_amass_files(tmp_path):
    """The SMPL path end to end on fixtures: a tiny SMPL model file and two AMASS-format motions."""
    from lsr1_core.hmr.data import amass_poses
    from lsr1_core.hmr.smpl import SMPLBody
    from smpl_fixture import write_tiny_smpl_fixture
    from lsr1_core.hmr.train import main
    model = write_tiny_smpl_fixture(tmp_path / "SMPL_NEUTRAL.pkl")
    rng = np.random.default_rng(0)
    for i in range(2):
        T = 20
        poses = 0.2 * rng.standard_normal((T, 156))
        poses[:, :3] = [np.pi / 2, 0, 0]  # AMASS: upright in a z-up world
        np.savez(tmp_path / f"m{i}.npz", poses=poses, trans=np.zeros((T, 3)), betas=np.zeros(16),
                 gender=np.array("neutral"), mocap_framerate=np.array(60.0))
    P = amass_poses([tmp_path / "m0.npz"])
    assert P.shape == (20, 72)
    # z-up AMASS roots become SMPL's y-up frame: the upright root turns into (about) the identity
    assert np.abs(P[:, :3]).max() < 1e-5
    body = SMPLBody(model)
    kp = body.keypoints(torch.from_numpy(P[:1]), body.default_shape(1))
    assert float(kp[0, COCO18.index("nose"), 1]) > float(kp[0, COCO18.index("right_ankle"), 1])  # head above feet (y up)
    small = ["--batch", "8", "--width", "16", "--val-every", "2", "--body", "smpl", "--smpl-model", str(model),
             "--amass", str(tmp_path / "m0.npz"), "--amass-val", str(tmp_path / "m1.npz")]
    assert main(["--stage", "initializer", "--run-dir", str(tmp_path / "i"), "--iterations", "2"] + small) == 0
    assert main(["--method", "lgd", "--initializer", str(tmp_path / "i"), "--run-dir", str(tmp_path / "u"),
                 "--iterations", "2", "--unroll", "2"] + small) == 0
    m, card = load_hmr_model(tmp_path / "u" / "best", body)
    assert card["body"]["body_model"] == "smpl" and card["body"]["pose_dim"] == 72
    with pytest.raises(BodyModelError, match="trained for body model 'smpl'"):
        load_hmr_model(tmp_path / "u" / "best", AnnyBody())
