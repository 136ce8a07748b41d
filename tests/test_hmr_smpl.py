"""SMPLBody on a generated tiny SMPL model (SMPL itself is licence-restricted)."""
import pickle

import numpy as np
import pytest
import torch

from lsr1_core.hmr.body import COCO18, BodyModelError
from lsr1_core.safe_unpickle import safe_load_pickle
from lsr1_core.hmr.smpl import ENV_VAR, SMPLBody
from smpl_fixture import write_tiny_smpl_fixture

ELBOW_R = 19  # SMPL joint index
KP = {n: i for i, n in enumerate(COCO18)}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_tiny_smpl_fixture(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl")


@pytest.fixture(scope="module")
def body(model_file):
    return SMPLBody(model_file)


def test_loads_by_argument_and_by_env_var(model_file, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    b1 = SMPLBody(model_file)
    monkeypatch.setenv(ENV_VAR, str(model_file))
    b2 = SMPLBody()
    monkeypatch.setenv(ENV_VAR, str(model_file.parent))  # a folder holding SMPL_NEUTRAL.pkl
    b3 = SMPLBody()
    assert b1.pose_dim == 72 and b1.shape_dim == 10 and b1.name == "smpl"
    pose, shape = 0.3 * torch.randn(3, 72), torch.randn(3, 10)
    for b in (b2, b3):
        assert b.model_path == model_file
        torch.testing.assert_close(b.keypoints(pose, shape), b1.keypoints(pose, shape))
    # the argument wins over the environment
    monkeypatch.setenv(ENV_VAR, "/nonexistent/SMPL_NEUTRAL.pkl")
    assert SMPLBody(model_file).model_path == model_file


def test_keypoints_shape_and_match_the_full_smplx_forward(body):
    pose, shape = 0.4 * torch.randn(5, 72), torch.randn(5, 10)
    kp = body.keypoints(pose, shape)
    assert kp.shape == (5, 18, 3) and kp.dtype == torch.float32
    out = body.smplx_output(pose, shape)
    assert out.joints.shape == (5, 29, 3)  # SMPL's 24 joints + 5 face vertices
    torch.testing.assert_close(kp, out.joints[:, body.coco_index], atol=1e-5, rtol=0)
    torch.testing.assert_close(kp[:, KP["neck"]], out.joints[:, 12], atol=1e-5, rtol=0)
    torch.testing.assert_close(kp[:, KP["left_wrist"]], out.joints[:, 20], atol=1e-5, rtol=0)
    # the nose keypoint is the skinned nose vertex
    v = body.vertices(pose, shape)
    torch.testing.assert_close(kp[:, KP["nose"]], v[:, body.face_vertex_ids[0]], atol=1e-5, rtol=0)
    # rest pose: keypoints sit at the fixture's rest joints (left side at +x)
    kp0 = body.keypoints(torch.zeros(1, 72), body.default_shape(1))[0]
    assert kp0[KP["left_shoulder"], 0] > 0.1 > -0.1 > kp0[KP["right_shoulder"], 0]
    assert kp0[KP["nose"], 1] > kp0[KP["neck"], 1] > kp0[KP["right_hip"], 1] > kp0[KP["right_ankle"], 1]


def test_elbow_bend_moves_the_wrist_only(body):
    shape = body.default_shape(1)
    pose = torch.zeros(1, 72)
    bent = pose.clone()
    bent[0, 3 * ELBOW_R + 1] = 1.2  # right elbow, about y
    a, b = body.keypoints(pose, shape)[0], body.keypoints(bent, shape)[0]
    moved = (b - a).norm(dim=-1)
    assert moved[KP["right_wrist"]] > 0.1
    face = [KP[n] for n in ("nose", "right_eye", "left_eye", "right_ear", "left_ear")]
    others = [i for n, i in KP.items() if n != "right_wrist" and i not in face]
    assert moved[others].max() < 1e-6  # joints are purely kinematic
    assert moved[face].max() < 0.02  # face vertices move only by the (small) pose correctives
    # forearm length is preserved by the rotation
    fa = lambda k: (k[KP["right_wrist"]] - k[KP["right_elbow"]]).norm()  # noqa: E731
    torch.testing.assert_close(fa(a), fa(b), atol=1e-6, rtol=0)
    # a hip flexion moves knee and ankle
    leg = pose.clone()
    leg[0, 3 * 1 + 0] = -0.8  # left hip, about x
    moved = (body.keypoints(leg, shape)[0] - a).norm(dim=-1)
    assert moved[KP["left_knee"]] > 0.05 and moved[KP["left_ankle"]] > 0.1 and moved[KP["right_knee"]] < 1e-6


def test_shape_moves_vertices_and_joints_and_gradients_flow(body):
    pose = torch.zeros(2, 72)
    s0, s1 = torch.zeros(2, 10), torch.zeros(2, 10)
    s1[:, 0] = 2.0  # the fixture's "height" direction
    v0, v1 = body.vertices(pose, s0), body.vertices(pose, s1)
    assert v0.shape == (2, body.smpl.get_num_verts(), 3)
    assert (v1 - v0).norm(dim=-1).max() > 0.05
    k0, k1 = body.keypoints(pose, s0), body.keypoints(pose, s1)
    assert (k1[:, KP["nose"], 1] - k1[:, KP["right_ankle"], 1]).min() > (k0[:, KP["nose"], 1] - k0[:, KP["right_ankle"], 1]).max()
    p = (0.2 * torch.randn(2, 72)).requires_grad_(True)
    s = torch.randn(2, 10).requires_grad_(True)
    body.keypoints(p, s).square().sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad[:, 3 * ELBOW_R:3 * ELBOW_R + 3].abs().sum() > 0
    assert s.grad.abs().sum() > 0
    f = body.faces
    assert f.dtype == torch.int64 and f.ndim == 2 and f.shape[1] == 3 and int(f.max()) < v0.shape[1]


def test_chumpy_style_pickle_and_fewer_betas(tmp_path, body):
    p = write_tiny_smpl_fixture(tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl", chumpy=True)
    assert b"chumpy.ch" in p.read_bytes()
    bc = SMPLBody(tmp_path)  # found in the folder by its official name
    pose, shape = 0.3 * torch.randn(2, 72), torch.randn(2, 10)
    torch.testing.assert_close(bc.keypoints(pose, shape), body.keypoints(pose, shape))
    torch.testing.assert_close(bc.vertices(pose, shape), body.vertices(pose, shape))
    p4 = write_tiny_smpl_fixture(tmp_path / "four.pkl", n_betas=4)
    b4 = SMPLBody(p4)  # asks for 10, the file has 4
    assert b4.shape_dim == 4 and b4.keypoints(pose, torch.zeros(2, 4)).shape == (2, 18, 3)
    assert SMPLBody(p4, num_betas=3).shape_dim == 3
    assert SMPLBody(p4, dtype=torch.float64).keypoints(pose, torch.zeros(2, 4)).dtype == torch.float64


def test_missing_and_wrong_files(tmp_path, monkeypatch, model_file):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(BodyModelError, match=ENV_VAR):
        SMPLBody()
    with pytest.raises(BodyModelError, match=rf"missing\.pkl.*{ENV_VAR}"):
        SMPLBody(tmp_path / "missing.pkl")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone.pkl"))
    with pytest.raises(BodyModelError, match=rf"gone\.pkl \(from the environment variable {ENV_VAR}\)"):
        SMPLBody()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BodyModelError, match=r"SMPL_NEUTRAL\.pkl.*" + ENV_VAR):
        SMPLBody(empty)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(BodyModelError, match="junk.pkl"):
        SMPLBody(junk)
    lst = tmp_path / "list.pkl"
    lst.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(BodyModelError, match="list"):
        SMPLBody(lst)
    # a code-running pickle is refused (and runs nothing)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))
    ev = tmp_path / "evil.pkl"
    ev.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(BodyModelError, match="system"):
        SMPLBody(ev)
    assert not marker.exists()
    # an SMPL+H-like file (52 joints) and a small file without vertex ids
    d = safe_load_pickle(model_file)
    smplh = dict(d, kintree_table=np.zeros((2, 52), dtype=np.int64))
    (tmp_path / "h.pkl").write_bytes(pickle.dumps(smplh, protocol=2))
    with pytest.raises(BodyModelError, match=r"kintree_table must be \(2, 24\).*SMPL\+H"):
        SMPLBody(tmp_path / "h.pkl")
    noid = {k: v for k, v in d.items() if k != "vertex_ids"}
    (tmp_path / "noid.pkl").write_bytes(pickle.dumps(noid, protocol=2))
    with pytest.raises(BodyModelError, match="vertex_ids"):
        SMPLBody(tmp_path / "noid.pkl")
    ids = {"nose": 0, "reye": 1, "leye": 2, "rear": 3, "lear": 4}
    assert SMPLBody(tmp_path / "noid.pkl", vertex_ids=ids).face_vertex_ids == (0, 1, 2, 3, 4)
    with pytest.raises(BodyModelError, match="out of range"):
        SMPLBody(tmp_path / "noid.pkl", vertex_ids=dict(ids, nose=10_000))


def test_interface_checks(body):
    with pytest.raises(BodyModelError, match=r"pose must be \(B, 72\)"):
        body.keypoints(torch.zeros(2, 69), torch.zeros(2, 10))
    with pytest.raises(BodyModelError, match=r"shape must be \(B, 10\)"):
        body.vertices(torch.zeros(2, 72), torch.zeros(2, 16))
    sig = body.signature()
    assert sig["body_model"] == "smpl" and sig["pose_dim"] == 72 and sig["shape_dim"] == 10
    body.check_signature(sig)
    with pytest.raises(BodyModelError, match="anny"):
        body.check_signature({"body_model": "anny", "pose_dim": 54, "shape_dim": 6})
