"""Named HMR update-stage trainings, launchable from the runs manager and the Meta-training page.

Each is the configuration of a shipped HMR model (pretrained/hmr_*.json's ``train_config``: batch 128, AdamW
1e-3, validation every 50 iterations, K = 8 for L-SR1 and 4 for LGD), trained on top of the shipped
initializer: the frozen initializer of ``pretrained/hmr_lsr1``, which every shipped HMR model shares."""
from __future__ import annotations

from ..checkpoints import PRETRAINED_DIR
from ..config import named_config
from ..learned.model import LSR1Config
from .train import HMRProblem, HMRTrainConfig

HMR_INITIALIZER = PRETRAINED_DIR / "hmr_lsr1"


def _update(method: str, unroll: int, secant: float, **kw) -> HMRTrainConfig:
    return HMRTrainConfig(stage="update", method=method, initializer=str(HMR_INITIALIZER), unroll=unroll,
                          secant_weight=secant, iterations=1500, batch=128, val_every=50, ckpt_every=50, **kw)


HMR_PRESETS = {
    "hmr_lsr1": lambda: _update("lsr1", 8, 1.0),
    "hmr_lsr1_nosec": lambda: _update("lsr1", 8, 0.0),
    "hmr_lgd": lambda: _update("lgd", 4, 1.0),
    # the scale-free form (one net on z = [θ, β], memory 8), as `python -m lsr1_core.hmr.train --form qn`
    "hmr_lsr1_qn": lambda: _update("lsr1", 8, 1.0, lsr1=LSR1Config.qn(memory=8).to_dict()),
}


def hmr_preset(name: str, **overrides) -> HMRTrainConfig:
    """A named HMR training configuration, optionally with overrides (validated)."""
    return named_config(HMR_PRESETS, name, overrides, "HMR preset")


# what the runs manager needs to train these (lsr1_core.meta.registry loads it by this module's name)
RUNS_PROBLEM = {"kind": "hmr", "label": "HMR", "config_class": HMRTrainConfig, "problem": HMRProblem,
                "presets": HMR_PRESETS, "make_config": hmr_preset, "run_name": lambda cfg: "hmr_" + cfg.method}
