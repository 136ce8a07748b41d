"""Meta-training for HMR (paper §5.2, Eq. 13): :class:`HMRProblem`, a meta-problem of the core
:class:`~lsr1_core.meta.train.Trainer` (which runs the loop, checkpoints, metrics and resume).

Two stages, each a normal run directory (config.json, metrics.jsonl, latest.*, best.*; resumable):
  1. ``--stage initializer``: the trainable initializer alone (the k = 0 terms of Eq. 13).
  2. ``--stage update --method lgd|lsr1 --initializer RUN_OR_CHECKPOINT``: the update module(s)
     on top of that initializer, which stays frozen, over K unrolled inner steps.
LGD trains its initializer jointly with the update; here every method shares one initializer so
that the comparison isolates the update modules (and the CPU budget goes to them). Joint
training is one flag away (``--train-initializer``).

Meta-loss, summed over the estimates k = 0…K and divided by K + 1:
    w2d·f(θ_k, β_k) + w3d·‖X_k − X_gt‖₁ + wθ·‖θ_k − θ_gt‖₁ + wβ·‖β_k − β_gt‖₁   (means over entries)
plus λ_sec·(1/K)Σ_k ‖p_k − B̃_k q_k‖²/N for L-SR1 (N = 60 coordinates; λ_sec = 0: "no secant").
The best checkpoint is the one with the lowest validation PA-MPJPE after K steps, as the paper
keeps the best validation checkpoint.

    python -m lsr1_core.hmr.train --stage initializer --run-dir runs/hmr_init --iterations 1500
    python -m lsr1_core.hmr.train --method lsr1 --initializer runs/hmr_init --run-dir runs/hmr_lsr1

    Trainer(HMRTrainConfig(initializer="pretrained/hmr_lsr1"), "runs/x", problem=HMRProblem).fit()
    Trainer.resume("runs/x", problem=HMRProblem).fit()
Named update-stage trainings on the shipped initializer: :mod:`lsr1_core.hmr.presets`.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoints import PRETRAINED_DIR, load_tensors_and_card
from ..config import ConfigMixin
from ..errors import LSR1Error
from ..learned.model import LSR1Config
from ..meta.train import MetaProblem, Trainer
from .anny_body import AnnyBody
from .compare import evaluate_model
from .data import CameraConfig, PoseSampler, SampleConfig, amass_poses, make_batch, to_camera, validation_set
from .models import HMRModel, HMRModelConfig, HMRObjective, load_hmr_model, save_hmr_model
from .smpl import SMPLBody


@dataclass
class HMRTrainConfig(ConfigMixin):
    config_name = "HMR training config"
    ignore_unknown = True  # cards of older versions carry fields this one dropped

    # what is trained
    stage: str = "update"  # "initializer" | "update"
    method: str = "lsr1"  # "lgd" | "lsr1"
    initializer: str | None = None  # run dir or checkpoint of a trained initializer (stage update)
    train_initializer: bool = False
    # the loop (the core Trainer's fields)
    iterations: int = 600
    batch: int = 128
    val_every: int = 50
    ckpt_every: int = 50
    val_size: int = 128
    seed: int = 0
    # the meta-loss (Eq. 13): K inner steps and λ_sec (L-SR1's secant term), then the weights of its terms
    unroll: int = 8
    secant_weight: float = 1.0
    # 2-D reprojection f, 3-D keypoints, pose θ, shape β (L1 means)
    w2d: float = 1.0
    w3d: float = 1.0
    wpose: float = 1.0
    wshape: float = 1.0
    # AdamW on the meta-loss
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # the models and the data
    width: int = 1024
    lsr1: dict = field(default_factory=lambda: {"memory": 4, "gamma1": 0.1, "gamma2": 0.001})
    data_fraction: float = 1.0
    drop_prob: float = 0.2
    train_noise: float = 0.0
    pose_jitter: float = 0.1
    device: str = "cpu"
    dtype: str = "float32"
    body: str = "anny"  # "anny" (embedded) | "smpl" (needs the licensed file and AMASS poses)
    smpl_model: str | None = None  # path; default: the LSR1_SMPL_MODEL environment variable
    amass: list = field(default_factory=list)  # AMASS .npz files/folders: training poses
    amass_val: list = field(default_factory=list)  # … validation poses (default: the training ones)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.amass, self.amass_val = list(self.amass), list(self.amass_val)
        if self.body not in ("anny", "smpl"):
            raise LSR1Error(f"body must be 'anny' or 'smpl', got {self.body!r}")
        if self.body == "smpl" and not self.amass:
            raise LSR1Error("training with the SMPL body needs SMPL poses: give AMASS files with --amass")
        if self.stage not in ("initializer", "update"):
            raise LSR1Error(f"stage must be 'initializer' or 'update', got {self.stage!r}")
        HMRModelConfig(method=self.method, width=self.width, lsr1=dict(self.lsr1))  # validates
        for name in ("iterations", "batch", "val_every", "ckpt_every", "val_size"):
            if int(getattr(self, name)) < 1:
                raise LSR1Error(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stage == "update" and self.unroll < 1:
            raise LSR1Error(f"unroll (K) must be >= 1 for the update stage, got {self.unroll}")
        if self.secant_weight < 0 or not math.isfinite(self.secant_weight):
            raise LSR1Error(f"secant_weight must be finite and >= 0, got {self.secant_weight}")

    @property
    def steps(self) -> int:
        return 0 if self.stage == "initializer" else self.unroll


def _resolve_checkpoint(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "best"
    return p


def make_body(cfg: HMRTrainConfig):
    if cfg.body == "smpl":
        return SMPLBody(cfg.smpl_model)
    return AnnyBody()


class _Task:
    """Training batches: a torch Generator (saved with the run for exact resume) and a sampler."""

    def __init__(self, cfg: HMRTrainConfig, body, poses=None):
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.sampler = PoseSampler(body, "train", jitter=cfg.pose_jitter, data_fraction=cfg.data_fraction,
                                   seed=cfg.seed, poses=poses)
        self.body = body
        self.sample_cfg = SampleConfig(drop_prob=cfg.drop_prob, noise=cfg.train_noise)
        self.batch = cfg.batch

    def sample(self):
        pose, shape = self.sampler.draw(self.batch, self.generator)
        return make_batch(self.body, pose, shape, self.generator, CameraConfig(), self.sample_cfg)


def meta_loss(model: HMRModel, body, batch, cfg: HMRTrainConfig) -> tuple[torch.Tensor, dict]:
    obj = HMRObjective(body, batch.kp2d, batch.conf, CameraConfig())
    res = model.fit(obj, cfg.steps)
    terms = []
    for pose, shape, f in zip(res.poses, res.shapes, res.f):
        X = to_camera(body.keypoints(pose, shape), CameraConfig(), body)
        terms.append(cfg.w2d * f.mean() + cfg.w3d * (X - batch.joints3d).abs().mean()
                     + cfg.wpose * (pose - batch.pose).abs().mean() + cfg.wshape * (shape - batch.shape).abs().mean())
    loss = torch.stack(terms).mean()
    stats = {"f_first": float(res.f[0].detach().mean()), "f_final": float(res.f[-1].detach().mean())}
    if res.secant:
        if model.is_qn:  # relative: mean(u²) = ‖p − Hq‖²/‖p‖² where the pair is used, the learned departure from SR1
            sec = torch.stack([s.mean() for s in res.departure]).mean()
        else:
            sec = torch.stack([s.mean() for s in res.secant]).mean() / (model.pose_dim + model.shape_dim)
        loss = loss + cfg.secant_weight * sec
        stats["secant"] = float(sec.detach())
        stats["secant_rel"] = float(torch.stack([s.mean() for s in res.secant_rel]).mean())
    return loss, stats


class HMRProblem(MetaProblem):
    """HMR meta-training as a :class:`~lsr1_core.meta.train.MetaProblem`: the initializer stage or the update
    stage (LGD or L-SR1 on top of a frozen initializer) with Eq. 13's meta-loss; the best checkpoint is the
    one with the lowest validation PA-MPJPE after K steps. ``Trainer(cfg, run_dir, problem=HMRProblem)``."""

    config_class = HMRTrainConfig

    def __init__(self, cfg: HMRTrainConfig, device, dtype, rank: int = 0, world: int = 1, *, body=None):
        if world > 1:
            raise LSR1Error("HMR meta-training runs in one process")
        self.cfg = cfg
        self.body = body or make_body(cfg)
        mcfg = HMRModelConfig(method=cfg.method, width=cfg.width, lsr1=dict(cfg.lsr1))
        self.net = HMRModel(self.body.signature(), mcfg)
        if cfg.stage == "update":
            if cfg.initializer:
                init, _ = load_hmr_model(_resolve_checkpoint(cfg.initializer), self.body)
                self.net.initializer.load_state_dict(init.initializer.state_dict())
            elif not cfg.train_initializer:
                raise LSR1Error("the update stage needs --initializer (a trained initializer run or checkpoint) "
                                "or --train-initializer")
        self.train_initializer = cfg.stage == "initializer" or cfg.train_initializer
        for p in self.net.initializer.parameters():
            p.requires_grad_(self.train_initializer)
        train_poses = amass_poses(cfg.amass) if cfg.amass else None
        val_poses = amass_poses(cfg.amass_val) if cfg.amass_val else train_poses
        self.task = _Task(cfg, self.body, train_poses)
        self.generator = self.task.generator
        self.val_batch = validation_set(self.body, n=cfg.val_size, poses=val_poses)

    def loss(self) -> tuple[torch.Tensor, dict]:
        self.net.train()
        if not self.train_initializer:
            self.net.initializer.eval()
        return meta_loss(self.net, self.body, self.task.sample(), self.cfg)

    def validate(self) -> dict:
        with torch.no_grad(), self.net.inference(rows=len(self.val_batch)):
            loss, stats = meta_loss(self.net, self.body, self.val_batch, self.cfg)
            curves = evaluate_model(self.net, self.body, self.val_batch, self.cfg.steps)
        k = self.cfg.steps
        return {"loss": float(curves["pa_mpjpe"][k]), "pa_mpjpe": float(curves["pa_mpjpe"][k]),
                "mpjpe": float(curves["mpjpe"][k]), "reproj": float(curves["reproj"][k]),
                "meta_loss": float(loss), **stats}

    def save_best(self, path: Path, *, iterations: int, metrics: dict, train_config: dict) -> None:
        save_hmr_model(path, self.net, versioned=True, iterations=iterations, metrics=metrics,
                       camera=CameraConfig().to_dict(), train_config=train_config)


def hmr_trainer(cfg: HMRTrainConfig, run_dir: str | Path, *, log=None, body=None) -> Trainer:
    """The core trainer on an HMR problem (``body``: an already built body model, else ``cfg.body``'s)."""
    problem = HMRProblem if body is None else functools.partial(HMRProblem, body=body)
    return Trainer(cfg, run_dir, log=log, problem=problem)


def export_pretrained(run_dir: str | Path, name: str, out_dir: str | Path | None = None) -> Path:
    """Copy a run's best checkpoint to ``pretrained/NAME`` with a model card that says how it was
    made (iterations, wall time, validation metrics, the full train config, the initializer run,
    and the command that reproduces it)."""
    run_dir = Path(run_dir)
    model, card = load_hmr_model(run_dir / "best")
    _, latest = load_tensors_and_card(run_dir / "latest", kind="lsr1-train-state")
    cfg = HMRTrainConfig.from_dict(card["train_config"])
    extra = {"name": name, "iterations": card.get("iterations"), "iterations_run": latest.get("iteration"),
             "wall_time_s": round(float(latest.get("elapsed_s", 0.0)), 1), "metrics": card.get("metrics", {}),
             "camera": card.get("camera"), "train_config": card["train_config"],
             "machine": "2-core CPU (no GPU)",
             "reproduce": f"python -m lsr1_core.hmr.train --method {cfg.method} --initializer <initializer run> "
                          f"--run-dir runs/{name} --iterations {latest.get('iteration')} "
                          f"--secant-weight {cfg.secant_weight} --unroll {cfg.unroll}"
                          if cfg.stage == "update" else
                          f"python -m lsr1_core.hmr.train --stage initializer --run-dir runs/{name} "
                          f"--iterations {latest.get('iteration')}"}
    if cfg.initializer:
        try:
            _, icard = load_hmr_model(_resolve_checkpoint(cfg.initializer))
            extra["initializer"] = {"iterations": icard.get("iterations"), "metrics": icard.get("metrics", {})}
        except Exception as e:  # noqa: BLE001 - provenance only
            extra["initializer"] = {"note": f"initializer run not found: {e}"}
    out = Path(out_dir) if out_dir else PRETRAINED_DIR
    out.mkdir(parents=True, exist_ok=True)
    save_hmr_model(out / name, model, **extra)
    return out / name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lsr1_core.hmr.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--stage", choices=("initializer", "update"), default="update")
    ap.add_argument("--method", choices=("lgd", "lsr1"), default="lsr1")
    ap.add_argument("--form", choices=("paper", "qn"), default="paper",
                    help="L-SR1 form: the paper's (two nets, pose and shape) or the scale-free qn form (one net on "
                         "z = [θ, β], memory 8)")
    ap.add_argument("--initializer")
    ap.add_argument("--train-initializer", action="store_true")
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--unroll", type=int, help="K inner steps (default 8 for lsr1, 4 for lgd)")
    ap.add_argument("--secant-weight", type=float)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--width", type=int)
    ap.add_argument("--data-fraction", type=float)
    ap.add_argument("--val-every", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--body", choices=("anny", "smpl"), help="body model (default: the embedded Anny)")
    ap.add_argument("--smpl-model", help="SMPL model file (default: $LSR1_SMPL_MODEL)")
    ap.add_argument("--amass", nargs="+", help="AMASS .npz files or folders: training poses (needed for SMPL)")
    ap.add_argument("--amass-val", nargs="+", help="AMASS files for validation (default: the training ones)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--export", metavar="NAME", help="copy --run-dir's best checkpoint to pretrained/NAME and exit")
    a = ap.parse_args(argv)
    if a.export:
        print(export_pretrained(a.run_dir, a.export))
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.resume:
        tr = Trainer.resume(a.run_dir, iterations=a.iterations, problem=HMRProblem)
    else:
        kw = {"stage": a.stage, "method": a.method, "initializer": a.initializer,
              "train_initializer": a.train_initializer}
        if a.unroll is None:
            kw["unroll"] = 4 if a.method == "lgd" else 8
        if a.form == "qn":
            if a.method != "lsr1":
                raise SystemExit("--form qn applies to --method lsr1 only")
            kw["lsr1"] = LSR1Config.qn(memory=8).to_dict()
        for name in ("iterations", "batch", "unroll", "secant_weight", "lr", "width", "data_fraction", "val_every",
                     "seed", "body", "smpl_model", "amass", "amass_val"):
            v = getattr(a, name)
            if v is not None:
                kw[name] = v
        if a.val_every is not None:
            kw["ckpt_every"] = a.val_every
        tr = hmr_trainer(HMRTrainConfig(**kw), a.run_dir)
    res = tr.fit()
    print(json.dumps({"run_dir": str(res.run_dir), "iterations": res.iterations, "best_val_pa_mpjpe_mm": res.best_val,
                      "wall_time_s": round(res.wall_time_s, 1), "skipped": res.skipped}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
