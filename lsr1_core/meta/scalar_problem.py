"""Scalar meta-training as a runs-manager problem (kind ``"scalars"``): the qn form's family-level scalars
(:mod:`lsr1_core.meta.scalars`) trained by the core :class:`~lsr1_core.meta.train.Trainer`, so that such a run is
launched, watched, resumed, cancelled and logged (metrics.jsonl, TensorBoard) like any other.

The Trainer's optimiser (Adam, ``lr``) steps θ along an antithetic-ES estimate of the gradient of the family's
budget meta-loss in evaluations: :meth:`ScalarProblem.loss` returns a surrogate whose value is the ES estimate of
the loss and whose gradient is the ES gradient. Validation is the same meta-loss on the family's fixed validation
draws; the best checkpoint is an ordinary qn L-SR1 checkpoint (zero output layers, the learned scalars in its
config), loadable by every page and by :class:`~lsr1_core.learned.LSR1Optimizer`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigMixin, named_config
from ..errors import LSR1Error
from .budget import es_gradient_with_stats
from .families import TRAIN_BASE
from .scalars import (SCALARS, check_family, check_params, clamp, config_for, net_for, seeds_of, training_loss,
                      validation_loss, values_of, what_is_learned)
from .train import MetaProblem


@dataclass
class ScalarTrainConfig(ConfigMixin):
    """A scalar meta-training run. ``batch`` is the number of antithetic ES pairs per iteration (each pair runs
    the family's training draws twice); ``train_pool`` 0 draws fresh training problems for every pair, n > 0 cycles
    through n fixed training seeds (families whose f* is expensive)."""

    config_name = "scalar training config"

    family: str = "logistic"
    params: tuple[str, ...] = ("diag", "gamma", "decay")
    iterations: int = 200
    lr: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1000.0
    val_every: int = 5
    ckpt_every: int = 10
    seed: int = 0
    batch: int = 2
    sigma: float = 0.15
    val_seeds: int = 2
    train_pool: int = 0
    dtype: str = "float64"
    device: str = "cpu"

    def __post_init__(self):
        self.params = tuple(self.params)
        self.betas = tuple(self.betas)
        check_family(self.family)
        check_params(self.params)
        ints = [("iterations", 0), ("val_every", 1), ("ckpt_every", 1), ("batch", 1), ("val_seeds", 1),
                ("train_pool", 0), ("seed", 0)]
        for name, lo in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise LSR1Error(f"{self.config_name}: {name} must be an integer ≥ {lo}, got {v!r}")
        for name in ("lr", "sigma", "grad_clip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and v < float("inf")):
                raise LSR1Error(f"{self.config_name}: {name} must be a positive finite number, got {v!r}")
        if self.dtype != "float64" or self.device != "cpu":
            raise LSR1Error("scalar meta-training runs in float64 on the CPU (the families are float64 problems)")


class ThetaModule(nn.Module):
    """θ, the learned scalars in ES units (0: the untrained start)."""

    def __init__(self, params):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([SCALARS[p].start for p in params], dtype=torch.float64))


class ScalarProblem(MetaProblem):
    config_class = ScalarTrainConfig
    stop_on_nonfinite_gradient = True

    def __init__(self, cfg: ScalarTrainConfig, device, dtype, rank: int = 0, world: int = 1):
        if world != 1:
            raise LSR1Error("scalar meta-training runs in one process")
        self.cfg = cfg
        self.family = check_family(cfg.family)
        self.params = check_params(cfg.params)
        self.net = ThetaModule(self.params)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.val_seeds = seeds_of(self.family, "val", cfg.val_seeds)

    def _clamped(self) -> list[float]:
        """θ kept in its bounds, in the parameter itself (Adam's step may leave them) and as numbers."""
        theta = clamp(self.net.theta.detach().tolist(), self.params)
        with torch.no_grad():
            self.net.theta.copy_(torch.tensor(theta, dtype=self.net.theta.dtype))
        return theta

    def _loss_at(self, theta, seed: int) -> float:
        return training_loss(self.family, self.params, theta, seed, self.cfg.train_pool or None)

    def loss(self):
        theta = torch.tensor(self._clamped(), dtype=torch.float64)
        est = es_gradient_with_stats(self._loss_at, theta, self.cfg.sigma, self.cfg.batch, self.generator)
        surrogate = (self.net.theta * est.grad.to(self.net.theta)).sum()
        loss = surrogate - surrogate.detach() + est.loss
        stats = {"es_grad_norm": float(est.grad.norm())}
        stats.update({f"theta_{p}": float(t) for p, t in zip(self.params, theta)})
        return loss, stats

    def validate(self) -> dict:
        theta = self._clamped()
        return {"loss": validation_loss(self.family, self.params, theta, self.val_seeds), **values_of(theta, self.params)}

    def save_best(self, path: Path, *, iterations: int, metrics: dict, train_config: dict) -> None:
        from ..learned.io import save_model

        theta = self._clamped()
        values = values_of(theta, self.params)
        extra = {"train_config": train_config, "family": self.family.name, "best_at_iteration": iterations,
                 "trained_scalars": {"family": self.family.name, "params": list(self.params), "theta": theta,
                                     "values": values, "validation_seeds": self.val_seeds,
                                     "iterations": iterations, "sigma": self.cfg.sigma, "pairs": self.cfg.batch,
                                     "lr": self.cfg.lr, "train_pool": self.cfg.train_pool or None,
                                     "training_seeds": f"{TRAIN_BASE} + ES draws (seed {self.cfg.seed})"},
                 "what_is_learned": what_is_learned(values)}
        save_model(path, net_for(config_for(theta, self.params)), versioned=True, iterations=iterations,
                   metrics=metrics, extra=extra)


def _preset(family: str, **kw):
    def make():
        return ScalarTrainConfig(family=family, **kw)
    return make


SCALAR_PRESETS = {
    "qn_scalars_logistic": _preset("logistic"),
    "qn_scalars_quadratic_n2": _preset("quadratic_n2", params=("gamma",)),
    "qn_scalars_hmr": _preset("hmr", train_pool=3, iterations=60, val_every=5),
    "qn_scalars_digits": _preset("digits_mlp", train_pool=2, iterations=60),
    "qn_scalars_lowrank_rosenbrock": _preset("lowrank_rosenbrock"),
}


def scalar_preset(name: str, **overrides) -> ScalarTrainConfig:
    return named_config(SCALAR_PRESETS, name, overrides, what="scalar training preset")


def _run_name(cfg: ScalarTrainConfig) -> str:
    return f"scalars_{cfg.family}"


# the runs manager's view of this problem (read by lsr1_core.meta.registry, which this module never imports)
RUNS_PROBLEM = {"kind": "scalars", "label": "qn scalars (ES)", "config_class": ScalarTrainConfig,
                "problem": ScalarProblem, "presets": SCALAR_PRESETS, "make_config": scalar_preset,
                "run_name": _run_name}
