"""Pose-estimation metrics, batched in torch: MPJPE, PA-MPJPE and 2-D reprojection error.

All functions take (B, J, 3) joint sets (or (B, J, 2) image points) as float32 or float64 tensors
and return one value per sample, shape (B,), in the units that went in (callers multiply metres
by 1000 for millimetres).

PA-MPJPE follows SPIN (Kolotouros et al. 2019, ``compute_similarity_transform``) and most HMR
papers: centre both sets; K = X1ᵀ Y1 (3×3 cross-covariance; SPIN writes X1 X2ᵀ for (3, N)
arrays); K = U Σ Vᵀ; R = V Z Uᵀ with Z = diag(1, 1, sign det(V Uᵀ)) so that det R = +1; scale
s = tr(R K) / ‖X1‖²; t = μ_Y − s R μ_X; then the mean per-joint Euclidean distance between
s R X + t and Y. The 3×3 algebra runs in float64 whatever the input dtype and the results are cast
back, so float32 inputs lose nothing to the SVD.

Inputs are validated: wrong rank, mismatched shapes and non-finite values raise
``lsr1_core.errors.ShapeError`` / ``NonFiniteError`` (both ``ValueError`` subclasses) with a message
saying which argument was wrong.
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch

from ..errors import LSR1Error, NonFiniteError, ShapeError

__all__ = ["NoVisibleJointsError", "similarity_procrustes", "mpjpe", "pa_mpjpe", "reprojection_error"]


class NoVisibleJointsError(LSR1Error):
    """A sample has no joint with confidence > 0, so its 2-D error is undefined."""


# -- validation --------------------------------------------------------------------------------
def _as_float(x, name: str) -> torch.Tensor:
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(x)
        except Exception as e:  # noqa: BLE001 - re-raised with the argument's name
            raise ShapeError(f"{name} must be a tensor, got {type(x).__name__}") from e
    if not x.is_floating_point():
        if x.dtype == torch.bool or x.is_complex():
            raise ShapeError(f"{name} must be a real floating-point tensor, got dtype {x.dtype}")
        x = x.to(torch.get_default_dtype())
    return x


def _points(x, name: str, dims: int = 3) -> torch.Tensor:
    x = _as_float(x, name)
    if x.ndim != 3 or x.shape[-1] != dims:
        raise ShapeError(f"{name} must have shape (B, J, {dims}) (batch, joints, coordinates), "
                         f"got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"{name} is empty: shape {tuple(x.shape)} (need B ≥ 1 and J ≥ 1)")
    return x


def _finite(x: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.reshape(x.shape[0], -1).any(1).nonzero().flatten().tolist()
        raise NonFiniteError(f"{name} contains NaN or infinity (in sample(s) {rows[:10]}"
                             f"{' …' if len(rows) > 10 else ''})")


def _pair(pred, gt, dims: int = 3, names=("pred", "gt")) -> tuple[torch.Tensor, torch.Tensor]:
    p = _points(pred, names[0], dims)
    g = _points(gt, names[1], dims)
    if p.shape != g.shape:
        raise ShapeError(f"{names[0]} and {names[1]} must have the same shape, "
                         f"got {tuple(p.shape)} and {tuple(g.shape)}")
    _finite(p, names[0])
    _finite(g, names[1])
    dt = torch.promote_types(p.dtype, g.dtype)
    return p.to(dt), g.to(dt)


# -- Procrustes --------------------------------------------------------------------------------
def similarity_procrustes(X: torch.Tensor, Y: torch.Tensor):
    """The similarity transform (s, R, t) minimising Σ_j ‖s R X_j + t − Y_j‖², as SPIN computes it.

    X, Y: (B, J, 3). Returns ``(aligned_X, scale, R, t)`` with ``aligned_X = s X Rᵀ + t`` (B, J, 3),
    scale (B,), R (B, 3, 3) a proper rotation (det +1), t (B, 3); all in the input dtype.

    Degenerate sets: when all points of X coincide (‖X1‖ = 0) any rotation is optimal and the
    best fit maps X onto Y's centroid: s = 0, R = I, t = μ_Y. When Y's points coincide, K = 0
    and the same s = 0 follows from the formula. No NaN in either case.
    """
    X, Y = _pair(X, Y, names=("X", "Y"))
    dtype = X.dtype
    Xd, Yd = X.double(), Y.double()
    mx, my = Xd.mean(1, keepdim=True), Yd.mean(1, keepdim=True)
    X1, Y1 = Xd - mx, Yd - my
    var = (X1 * X1).sum((1, 2))  # ‖X1‖²
    # "all points equal", up to the rounding of the centring itself (relative spread ≤ 1e-12)
    degenerate = var <= 1e-24 * (Xd * Xd).sum((1, 2))
    K = X1.transpose(1, 2) @ Y1  # (B, 3, 3): Σ_j x_j y_jᵀ
    U, _, Vh = torch.linalg.svd(K)
    V = Vh.transpose(1, 2)
    Ut = U.transpose(1, 2)
    d = torch.linalg.det(V @ Ut)
    Z = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d),
                                      torch.where(d < 0, -torch.ones_like(d), torch.ones_like(d))], -1))
    R = V @ Z @ Ut
    eye = torch.eye(3, dtype=R.dtype, device=R.device).expand_as(R)
    R = torch.where(degenerate[:, None, None], eye, R)
    trRK = torch.diagonal(R @ K, dim1=1, dim2=2).sum(-1)
    s = torch.where(degenerate, torch.zeros_like(var), trRK / torch.where(degenerate, torch.ones_like(var), var))
    t = my.squeeze(1) - s[:, None] * (mx.squeeze(1)[:, None, :] @ R.transpose(1, 2)).squeeze(1)
    aligned = s[:, None, None] * (Xd @ R.transpose(1, 2)) + t[:, None, :]
    return aligned.to(dtype), s.to(dtype), R.to(dtype), t.to(dtype)


# -- metrics -----------------------------------------------------------------------------------
def _root_index(root, J: int) -> list[int]:
    try:
        idx = [operator.index(root)]
    except TypeError:
        idx = list(root)
    if not idx:
        raise ShapeError("root must be a joint index or a non-empty sequence of joint indices")
    out = []
    for i in idx:
        try:
            k = operator.index(i)
        except TypeError:
            k = None
        if k is None or isinstance(i, bool) or not -J <= k < J:
            raise ShapeError(f"root index {i!r} is not a joint index for J = {J} joints")
        out.append(k)
    return out


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, root: int | Sequence[int] | None = None) -> torch.Tensor:
    """Mean per-joint position error (B,): mean over joints of ‖pred_j − gt_j‖.

    ``root``: None compares the sets as given; an index or indices (e.g. the two hips) centres
    each set on the mean of those joints first (the usual pelvis-centred MPJPE).
    """
    p, g = _pair(pred, gt)
    if root is not None:
        idx = _root_index(root, p.shape[1])
        p = p - p[:, idx].mean(1, keepdim=True)
        g = g - g[:, idx].mean(1, keepdim=True)
    return (p - g).norm(dim=-1).mean(-1)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Procrustes-aligned MPJPE (B,): MPJPE after the similarity transform of pred onto gt."""
    p, g = _pair(pred, gt)
    aligned = similarity_procrustes(p, g)[0]
    return (aligned - g).norm(dim=-1).mean(-1)


def reprojection_error(pred2d: torch.Tensor, gt2d: torch.Tensor, conf: torch.Tensor | None = None) -> torch.Tensor:
    """Mean 2-D distance (B,) over the visible joints (conf > 0), unweighted.

    pred2d (B, J, 2); gt2d (B, J, 2) with conf (B, J), or gt2d (B, J, 3) holding (x, y, conf) as
    3DPW's ``poses2d`` does when conf is None. Invisible joints are ignored entirely (gt2d may hold
    anything there, NaN included); a sample without any visible joint raises
    ``NoVisibleJointsError``.
    """
    if conf is None:
        g = _as_float(gt2d, "gt2d")
        if g.ndim != 3 or g.shape[-1] != 3:
            raise ShapeError("without conf, gt2d must have shape (B, J, 3) holding (x, y, confidence); "
                             f"got {tuple(g.shape)}")
        gt2d, conf = g[..., :2], g[..., 2]
    p = _points(pred2d, "pred2d", 2)
    g = _points(gt2d, "gt2d", 2)
    c = _as_float(conf, "conf")
    if p.shape != g.shape:
        raise ShapeError(f"pred2d and gt2d must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    if c.shape != p.shape[:2]:
        raise ShapeError(f"conf must have shape (B, J) = {tuple(p.shape[:2])}, got {tuple(c.shape)}")
    _finite(p, "pred2d")
    _finite(c, "conf")
    vis = c > 0
    _finite(torch.where(vis[..., None], g, torch.zeros_like(g)), "gt2d (at visible joints)")
    n = vis.sum(1)
    if bool((n == 0).any()):
        rows = (n == 0).nonzero().flatten().tolist()
        raise NoVisibleJointsError(f"reprojection error undefined: sample(s) {rows[:10]}"
                                   f"{' …' if len(rows) > 10 else ''} have no visible joint (conf > 0)")
    dt = torch.promote_types(p.dtype, g.dtype)
    diff = torch.where(vis[..., None], p.to(dt) - g.to(dt), torch.zeros((), dtype=dt, device=p.device))
    d = diff.norm(dim=-1)
    return d.sum(1) / n.to(dt)
