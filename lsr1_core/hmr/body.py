"""One interface for the parametric body models the HMR pipeline fits.

A body model maps a pose vector θ (B, pose_dim) and a shape vector β (B, shape_dim) to
  * ``keypoints(θ, β)``: (B, 18, 3) 3-D keypoints in metres, OpenPose COCO-18 order
    (``COCO18``), differentiable and cheap: the inner fitting loop and meta-training call it at
    batch 128+ many times, so implementations avoid skinning the whole mesh here;
  * ``vertices(θ, β)``: (B, V, 3) the full skinned mesh (display, rendering, export);
  * ``faces``: (F, 3) int64 triangle indices.

θ[:, :3] is always the global (root) orientation as an axis-angle vector; the rest is
model-specific (per-bone axis-angle). Units are metres; the body's root sits near the origin.
``signature()`` identifies the model for checkpoint compatibility.
"""
from __future__ import annotations

import torch

from ..errors import LSR1Error

# OpenPose COCO-18 keypoint order (LGD and 3DPW poses2d use it).
COCO18 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist", "right_hip", "right_knee",
    "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
    "left_eye", "right_ear", "left_ear",
)
# The 3DPW / SPIN evaluation protocol's 14 joints, as indices into COCO18:
# ankles, knees, hips, wrists, elbows, shoulders, neck, head (nose stands for the head).
EVAL14 = (10, 9, 8, 11, 12, 13, 4, 3, 2, 5, 6, 7, 1, 0)
# Joint weights of LGD's loss: wrists/ankles ×8, elbows/knees ×4, shoulders/hips ×2, others ×1.
_LGD_W = {"right_wrist": 8, "left_wrist": 8, "right_ankle": 8, "left_ankle": 8,
          "right_elbow": 4, "left_elbow": 4, "right_knee": 4, "left_knee": 4,
          "right_shoulder": 2, "left_shoulder": 2, "right_hip": 2, "left_hip": 2}
LGD_JOINT_WEIGHTS = tuple(float(_LGD_W.get(n, 1)) for n in COCO18)


class BodyModelError(LSR1Error):
    """A body model could not be loaded, or was given inputs of the wrong shape."""


class BodyModel(torch.nn.Module):
    """Base class; subclasses set ``name``, ``pose_dim``, ``shape_dim`` and implement the two maps."""

    name: str = "body"
    pose_dim: int = 0
    shape_dim: int = 0
    keypoint_names: tuple[str, ...] = COCO18
    # The model's world frame: which axis is up, and the rotation taking world coordinates to the
    # pipeline's camera coordinates (x right in the image, y down, z forward) for a body at heading 0
    # facing the camera. Default: SMPL's frame (y up, facing +z).
    up_axis: int = 1
    world_to_camera: tuple = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))

    # -- to implement -------------------------------------------------------------------------
    def _keypoints(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _vertices(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def faces(self) -> torch.Tensor:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def check(self, pose: torch.Tensor, shape: torch.Tensor) -> None:
        if pose.ndim != 2 or pose.shape[1] != self.pose_dim:
            raise BodyModelError(f"{self.name}: pose must be (B, {self.pose_dim}), got {tuple(pose.shape)}")
        if shape.ndim != 2 or shape.shape[1] != self.shape_dim:
            raise BodyModelError(f"{self.name}: shape must be (B, {self.shape_dim}), got {tuple(shape.shape)}")
        if pose.shape[0] != shape.shape[0]:
            raise BodyModelError(f"{self.name}: pose batch {pose.shape[0]} != shape batch {shape.shape[0]}")

    def keypoints(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        self.check(pose, shape)
        return self._keypoints(pose, shape)

    def vertices(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        self.check(pose, shape)
        return self._vertices(pose, shape)

    def default_shape(self, batch: int = 1) -> torch.Tensor:
        """The mean / neutral shape."""
        return torch.zeros(batch, self.shape_dim)

    def sample_shape(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Random shapes for training samples (default: standard normal, as SMPL betas)."""
        return torch.randn(n, self.shape_dim, generator=gen)

    def signature(self) -> dict:
        return {"body_model": self.name, "pose_dim": int(self.pose_dim), "shape_dim": int(self.shape_dim),
                "keypoints": list(self.keypoint_names)}

    def check_signature(self, sig: dict, what: str = "checkpoint") -> None:
        """Raise a clear error when ``sig`` (from a checkpoint card) does not fit this model."""
        mine = self.signature()
        for key in ("body_model", "pose_dim", "shape_dim"):
            if sig.get(key) != mine[key]:
                raise BodyModelError(
                    f"this {what} was trained for body model {sig.get('body_model')!r} "
                    f"(pose_dim={sig.get('pose_dim')}, shape_dim={sig.get('shape_dim')}), "
                    f"but the chosen body model is {mine['body_model']!r} "
                    f"(pose_dim={mine['pose_dim']}, shape_dim={mine['shape_dim']})")
