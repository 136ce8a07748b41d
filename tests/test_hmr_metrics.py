"""MPJPE, PA-MPJPE (SPIN's similarity Procrustes) and the 2-D reprojection error."""
import math

import pytest
import torch

from lsr1_core.errors import NonFiniteError, ShapeError
from lsr1_core.hmr.metrics import (NoVisibleJointsError, mpjpe, pa_mpjpe, reprojection_error,
                                   similarity_procrustes)


def random_rotation(B, dtype=torch.float64):
    Q, Rr = torch.linalg.qr(torch.randn(B, 3, 3, dtype=dtype))
    Q = Q * torch.sign(torch.diagonal(Rr, dim1=1, dim2=2))[:, None, :]
    det = torch.linalg.det(Q)
    Q[:, :, 0] *= det[:, None]  # make det +1
    return Q


def test_procrustes_recovers_a_known_similarity_transform():
    B, J = 5, 14
    X = torch.randn(B, J, 3, dtype=torch.float64)
    R = random_rotation(B)
    s = torch.rand(B, dtype=torch.float64) * 2 + 0.5
    t = torch.randn(B, 3, dtype=torch.float64)
    Y = s[:, None, None] * X @ R.transpose(1, 2) + t[:, None]
    aligned, s_hat, R_hat, t_hat = similarity_procrustes(X, Y)
    assert aligned.shape == (B, J, 3) and s_hat.shape == (B,) and R_hat.shape == (B, 3, 3) and t_hat.shape == (B, 3)
    torch.testing.assert_close(aligned, Y, atol=1e-5, rtol=0)
    torch.testing.assert_close(s_hat, s, atol=1e-6, rtol=0)
    torch.testing.assert_close(R_hat, R, atol=1e-6, rtol=0)
    torch.testing.assert_close(t_hat, t, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R_hat), torch.ones(B, dtype=torch.float64))


def test_procrustes_float32_and_reflection_is_not_used():
    B, J = 3, 14
    X = torch.randn(B, J, 3)
    # Y is a mirror image of X: the best *proper* rotation cannot reproduce it, det must stay +1.
    Y = X * torch.tensor([-1.0, 1.0, 1.0])
    aligned, s, R, t = similarity_procrustes(X, Y)
    assert aligned.dtype == torch.float32 and R.dtype == torch.float32
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(B), atol=1e-5, rtol=0)
    assert (pa_mpjpe(X, Y) > 1e-3).all()
    # float32 recovery of a known transform
    R0 = random_rotation(B).float()
    Y2 = 1.7 * X @ R0.transpose(1, 2) + torch.tensor([0.1, -2.0, 3.0])
    torch.testing.assert_close(similarity_procrustes(X, Y2)[0], Y2, atol=1e-5, rtol=0)


def test_procrustes_matches_numpy_spin_reference():
    np = pytest.importorskip("numpy")

    def spin(S1, S2):  # SPIN's compute_similarity_transform, (N, 3) in, (N, 3) out
        S1, S2 = S1.T, S2.T
        mu1, mu2 = S1.mean(1, keepdims=True), S2.mean(1, keepdims=True)
        X1, X2 = S1 - mu1, S2 - mu2
        var1 = np.sum(X1 ** 2)
        K = X1.dot(X2.T)
        U, s, Vh = np.linalg.svd(K)
        V = Vh.T
        Z = np.eye(U.shape[0])
        Z[-1, -1] *= np.sign(np.linalg.det(U.dot(V.T)))
        R = V.dot(Z.dot(U.T))
        scale = np.trace(R.dot(K)) / var1
        t = mu2 - scale * (R.dot(mu1))
        return (scale * R.dot(S1) + t).T

    X = torch.randn(4, 14, 3, dtype=torch.float64)
    Y = torch.randn(4, 14, 3, dtype=torch.float64)  # unrelated sets: a real fit, not exact
    ours = similarity_procrustes(X, Y)[0]
    ref = torch.stack([torch.from_numpy(spin(X[b].numpy(), Y[b].numpy())) for b in range(4)])
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)


def test_procrustes_degenerate_sets_give_no_nan():
    X = torch.full((2, 14, 3), 0.1)
    Y = torch.randn(2, 14, 3)
    aligned, s, R, t = similarity_procrustes(X, Y)
    for a in (aligned, s, R, t):
        assert torch.isfinite(a).all()
    torch.testing.assert_close(aligned, Y.mean(1, keepdim=True).expand_as(Y))  # best fit: Y's centroid
    assert (s == 0).all()
    # all-equal target
    aligned2, s2, _, _ = similarity_procrustes(Y, torch.ones(2, 14, 3))
    torch.testing.assert_close(aligned2, torch.ones(2, 14, 3), atol=1e-6, rtol=0)
    assert torch.isfinite(pa_mpjpe(X, Y)).all() and torch.isfinite(pa_mpjpe(Y, X)).all()


def test_pa_mpjpe_zero_for_identical_and_invariant_to_similarity_of_prediction():
    gt = torch.randn(6, 14, 3, dtype=torch.float64)
    torch.testing.assert_close(pa_mpjpe(gt, gt), torch.zeros(6, dtype=torch.float64), atol=1e-10, rtol=0)
    pred = gt + 0.05 * torch.randn_like(gt)
    base = pa_mpjpe(pred, gt)
    assert (base > 1e-3).all()
    R = random_rotation(6)
    moved = 3.0 * pred @ R.transpose(1, 2) + torch.randn(6, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(pa_mpjpe(moved, gt), base, atol=1e-10, rtol=0)
    # PA never exceeds the plain error after any alignment
    assert (base <= mpjpe(pred, gt) + 1e-12).all()


def test_mpjpe_known_offset_and_root_centring():
    gt = torch.randn(3, 14, 3)
    off = torch.tensor([0.3, -0.4, 1.2])
    pred = gt + off
    torch.testing.assert_close(mpjpe(pred, gt), torch.full((3,), float(off.norm())))
    # centring on the hips removes a global offset entirely
    torch.testing.assert_close(mpjpe(pred, gt, root=(2, 3)), torch.zeros(3), atol=1e-6, rtol=0)
    # a single joint moved by d: mean error d / J after centring on other joints
    pred2 = gt.clone()
    pred2[:, 5, 0] += 1.4
    torch.testing.assert_close(mpjpe(pred2, gt, root=(2, 3)), torch.full((3,), 1.4 / 14), atol=1e-6, rtol=0)
    torch.testing.assert_close(mpjpe(pred2, gt, root=0), torch.full((3,), 1.4 / 14), atol=1e-6, rtol=0)
    # per-sample values, not a batch mean
    pred3 = gt.clone()
    pred3[1] += torch.tensor([0.0, 2.0, 0.0])
    torch.testing.assert_close(mpjpe(pred3, gt), torch.tensor([0.0, 2.0, 0.0]))


def test_reprojection_error_ignores_invisible_joints():
    gt = torch.randn(2, 18, 2)
    pred = gt.clone()
    conf = torch.ones(2, 18)
    pred[0, 3] += torch.tensor([3.0, 4.0])  # visible: distance 5
    pred[0, 7] += 100.0  # invisible below
    conf[0, 7] = 0.0
    gt[1, 9] = float("nan")  # invisible NaN in the ground truth is fine
    conf[1, 9] = 0.0
    err = reprojection_error(pred, gt, conf)
    torch.testing.assert_close(err, torch.tensor([5.0 / 17, 0.0]))
    # (x, y, conf) layout, as 3DPW's poses2d
    gt3 = torch.cat([gt, conf[..., None]], -1)
    torch.testing.assert_close(reprojection_error(pred, gt3), err)
    # confidences are not weights
    conf2 = conf.clone()
    conf2[0, 3] = 0.1
    torch.testing.assert_close(reprojection_error(pred, gt, conf2), err)


def test_errors_on_bad_input():
    a = torch.randn(2, 14, 3)
    with pytest.raises(ShapeError, match=r"\(B, J, 3\)"):
        mpjpe(torch.randn(14, 3), torch.randn(14, 3))
    with pytest.raises(ShapeError, match="same shape"):
        pa_mpjpe(a, torch.randn(2, 13, 3))
    with pytest.raises(ShapeError, match=r"\(B, J, 3\)"):
        similarity_procrustes(torch.randn(2, 14, 2), torch.randn(2, 14, 2))
    bad = a.clone()
    bad[1, 4, 2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"pred contains NaN.*\[1\]"):
        pa_mpjpe(bad, a)
    with pytest.raises(NonFiniteError, match="gt"):
        mpjpe(a, torch.where(bad.isnan(), torch.tensor(math.inf), bad))
    with pytest.raises(ShapeError, match="root index 20"):
        mpjpe(a, a, root=(2, 20))
    conf = torch.ones(2, 18)
    conf[1] = 0.0
    with pytest.raises(NoVisibleJointsError, match=r"sample\(s\) \[1\]"):
        reprojection_error(torch.randn(2, 18, 2), torch.randn(2, 18, 2), conf)
    with pytest.raises(ShapeError, match="conf must have shape"):
        reprojection_error(torch.randn(2, 18, 2), torch.randn(2, 18, 2), torch.ones(2, 17))
    with pytest.raises(ShapeError, match=r"\(B, J, 3\) holding"):
        reprojection_error(torch.randn(2, 18, 2), torch.randn(2, 18, 2))
    gt = torch.randn(2, 18, 2)
    gt[0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="visible"):
        reprojection_error(torch.randn(2, 18, 2), gt, torch.ones(2, 18))
    assert issubclass(NoVisibleJointsError, ValueError)


def test_gradients_flow_through_pa_mpjpe():
    gt = torch.randn(2, 14, 3, dtype=torch.float64)
    pred = (gt + 0.1 * torch.randn_like(gt)).requires_grad_(True)
    pa_mpjpe(pred, gt).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
