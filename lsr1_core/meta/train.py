"""Unrolled meta-training of L-SR1 (Eq. 9) with validation, checkpoints and resume.

The :class:`Trainer` runs any meta-training problem: the loop, gradient clipping, skipped non-finite
iterations, validation, checkpoints, metrics, resume and data parallelism are its; a
:class:`MetaProblem` supplies the model, the training meta-loss, validation and the best checkpoint's
format. :class:`LSR1Problem` is the paper's analytic tasks (the presets of :mod:`lsr1_core.meta.presets`);
human mesh recovery is another problem (:mod:`lsr1_core.hmr.train`).

A run lives in a directory:
    config.json       the validated config
    metrics.jsonl     one JSON object per meta-iteration (validation fields every val_every)
    latest.*          model + optimizer + RNG state for resume (safetensors + JSON)
    best.*            the model with the lowest validation loss (a normal model checkpoint)
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..checkpoints import (atomic_write_bytes, load_tensors_and_card, open_regular, read_regular_file,
                           save_tensors_and_card)
from ..device import resolve_device, resolve_dtype
from ..errors import CheckpointError, LSR1Error, NonFiniteMetaGradient
from ..learned.io import save_model
from ..learned.mlp import set_batchnorm_sync
from ..learned.model import LSR1Net
from .presets import TrainConfig
from .tasks import MetaTask
from .runfiles import (MAX_METRICS_BYTES, MAX_RUN_JSON_BYTES, as_integer, check_latest_present,  # noqa: F401
                       parse_metric_lines, read_metric_records, read_run_config, recorded_progress, write_config)
from .unroll import META_TERMS, TERMS_KEY, evaluate, unroll  # noqa: F401  (importable from here as before)


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    best_val: float
    last_val: dict
    wall_time_s: float
    skipped: int


def _dist_rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class MetaProblem:
    """What the :class:`Trainer` needs from a meta-training problem.

    A subclass is built as ``Problem(cfg, device, dtype, rank, world)`` (after the trainer seeded torch with
    ``cfg.seed``) and sets ``net`` (the module whose state is checkpointed) and ``generator`` (the training
    batches' RNG, saved with the run for an exact resume). ``cfg`` must carry the optimiser's fields (lr,
    betas, weight_decay, grad_clip), the loop's (iterations, val_every, ckpt_every, seed, batch) and
    ``to_dict``/``from_dict``/``replace``."""

    config_class: type = TrainConfig
    net: nn.Module
    generator: torch.Generator

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trained parameters (the optimiser's and the clipped ones)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def loss(self) -> tuple[torch.Tensor, dict]:
        """One training meta-batch (this process's shard of it): the meta-loss with its graph, and
        statistics to log. Puts the model in training mode."""
        raise NotImplementedError

    def validate(self) -> dict:
        """Validation statistics; ``"loss"`` chooses the best checkpoint (lower is better)."""
        raise NotImplementedError

    def save_best(self, path: Path, *, iterations: int, metrics: dict, train_config: dict) -> None:
        """Write the current model as a checkpoint at ``path`` (versioned, so a crash never leaves half)."""
        raise NotImplementedError


class LSR1Problem(MetaProblem):
    """The paper's analytic meta-training (quadratic and profile presets): unrolled L-SR1 on a
    :class:`MetaTask`, validated on its fixed validation set, saved as an L-SR1 checkpoint."""

    config_class = TrainConfig

    @property
    def stop_on_nonfinite_gradient(self) -> bool:
        """A safeguarded model's runs never blow up, so a non-finite meta-gradient is a defect: training stops and
        names the term. The unsafeguarded paper form's sampled batches may overflow (float32, no safeguard — the
        paper's own behaviour); such a step is skipped and its record names the terms, as before."""
        return self.cfg.model.safeguard is not None

    def __init__(self, cfg: TrainConfig, device, dtype, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.net = LSR1Net(cfg.model).to(device=device, dtype=dtype)
        if cfg.compile:
            # Compiles each module's forward in place; parameters and state_dict keys are unchanged.
            for module in (self.net.encoder, self.net.vector_generator, self.net.lr_generator):
                module.compile(dynamic=False)
        self.task = MetaTask(cfg, device, dtype)
        self.generator = self.task.generator
        self.val_obj, self.val_x0 = self.task.validation()

    def loss(self) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        self.net.train()
        obj, x0 = self.task.sample()
        if self.world > 1:
            # Every process draws the same global batch and keeps its own contiguous shard.
            per = cfg.batch // self.world
            idx = slice(self.rank * per, (self.rank + 1) * per)
            obj = obj.subset(idx) if hasattr(obj, "subset") else obj
            x0 = x0[idx]
            set_batchnorm_sync(dist.group.WORLD)
        try:
            return unroll(self.net, obj, x0, cfg.unroll, cfg.secant_weight, cfg.detach_gradient, cfg.secant_form,
                          cfg.meta_loss)
        finally:
            if self.world > 1:
                set_batchnorm_sync(None)

    def validate(self) -> dict:
        return evaluate(self.net, self.val_obj, self.val_x0, self.cfg.unroll, self.cfg.secant_weight,
                        self.cfg.secant_form, self.cfg.meta_loss)

    def save_best(self, path: Path, *, iterations: int, metrics: dict, train_config: dict) -> None:
        save_model(path, self.net, versioned=True, iterations=iterations, metrics=metrics,
                   extra={"train_config": train_config})


class Trainer:
    """Meta-trains the model of one :class:`MetaProblem`: ``Trainer(cfg, run_dir).fit()`` (the paper's
    analytic tasks), ``Trainer(cfg, run_dir, problem=HMRProblem).fit()``; ``Trainer.resume(run_dir)``."""

    def __init__(self, cfg, run_dir: str | Path, *, log: Callable[[dict], None] | None = None,
                 problem: Callable[..., MetaProblem] | None = None):
        problem = problem or LSR1Problem
        config_class = getattr(problem, "config_class", None)
        if isinstance(config_class, type) and not isinstance(cfg, config_class):
            raise LSR1Error(f"this problem trains from a {config_class.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype)
        self.rank, self.world = _dist_rank_world()
        if cfg.batch % self.world:
            raise LSR1Error(f"batch {cfg.batch} must be divisible by the number of processes ({self.world})")
        seed = getattr(cfg, "seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise LSR1Error(f"seed must be an integer in [0, 2**63), got {seed!r}")
        torch.manual_seed(seed)
        self.problem = problem(cfg, self.device, self.dtype, self.rank, self.world)
        self.net = self.problem.net
        self.opt = torch.optim.AdamW(self.problem.parameters(), lr=cfg.lr, betas=cfg.betas,
                                     weight_decay=cfg.weight_decay)
        self.iteration = 0
        self.best_val = math.inf
        self.last_val: dict = {}
        self.skipped = 0
        self.elapsed = 0.0
        self.log = log
        self._stop = False
        self._resumed = False

    # --- persistence ----------------------------------------------------------
    def _prepare_dir(self, fresh: bool) -> None:
        if self.rank != 0:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise LSR1Error(f"cannot write to run directory {self.run_dir}: {e}") from None
        if fresh:
            held = [n for n in ("latest.json", "metrics.jsonl", "best.json") if (self.run_dir / n).exists()]
            if held:
                raise LSR1Error(f"{self.run_dir} already holds a run ({held[0]}); resume it or choose another "
                                "directory (a new run would overwrite it)")
            write_config(self.run_dir / "config.json", self.cfg)

    def save_latest(self) -> None:
        """Checkpoint the run for resume (model, optimiser, RNG states, counters)."""
        if self.rank != 0:
            return
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        osd = self.opt.state_dict()
        for idx, st in osd["state"].items():
            for key, val in st.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(val)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.task"] = self.problem.generator.get_state()
        card = {"kind": "lsr1-train-state", "iteration": self.iteration, "best_val": self.best_val,
                "last_val": self.last_val, "skipped": self.skipped, "elapsed_s": self.elapsed,
                "param_groups": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
                                 for g in osd["param_groups"]],
                "config": self.cfg.to_dict()}
        save_tensors_and_card(self.run_dir / "latest", tensors, card, versioned=True)

    def _load_latest(self) -> None:
        # the model's tensors must be of its dtype kinds (an I64 header over float weights with a recomputed hash
        # would resume with weights around 1e18)
        expected = {f"model.{k}": v.dtype for k, v in self.net.state_dict().items()}
        tensors, card = load_tensors_and_card(self.run_dir / "latest", kind="lsr1-train-state", expected_dtypes=expected)
        model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.net.load_state_dict(model_sd)
        except RuntimeError as e:
            raise CheckpointError(f"latest checkpoint in {self.run_dir} does not fit the run's config: {e}") from None
        self.net.to(device=self.device, dtype=self.dtype)
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v.to(self.device) if key != "step" else v
        groups = self.opt.state_dict()["param_groups"]
        for g, saved in zip(groups, card["param_groups"]):
            g.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items()})
        self.opt.load_state_dict({"state": state, "param_groups": groups})
        torch.set_rng_state(tensors["rng.torch"])
        self.problem.generator.set_state(tensors["rng.task"])
        self.iteration = int(card["iteration"])
        self.best_val = float(card["best_val"])
        self.last_val = card.get("last_val", {})
        self.skipped = int(card.get("skipped", 0))
        self.elapsed = float(card.get("elapsed_s", 0.0))

    @classmethod
    def resume(cls, run_dir: str | Path, *, iterations: int | None = None, log=None,
               problem: Callable[..., MetaProblem] | None = None, config_class: type | None = None) -> "Trainer":
        """The trainer of an existing run directory, at its latest checkpoint (or at the start, when it was
        killed before its first one); ``iterations`` extends the run (config.json is rewritten)."""
        run_dir = Path(run_dir)
        config_class = config_class or getattr(problem, "config_class", TrainConfig)
        cfg = read_run_config(run_dir, config_class)
        if iterations is not None:
            if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
                raise LSR1Error(f"iterations must be a positive integer, got {iterations!r}")
            cfg = cfg.replace(iterations=iterations)
        check_latest_present(run_dir)  # never start over a run that had progressed (issue 24, item 1)
        tr = cls(cfg, run_dir, log=log, problem=problem)
        tr._resumed = True
        if (run_dir / "latest.json").exists():
            try:
                tr._load_latest()
            except LSR1Error:
                raise
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
                raise CheckpointError(f"the latest checkpoint in {run_dir} is damaged ({type(e).__name__}: {e}); "
                                      "it cannot be resumed") from None
        if iterations is not None:
            if iterations < tr.iteration:
                raise LSR1Error(f"cannot resume {run_dir} to {iterations} iterations: it is already at "
                                f"{tr.iteration} (config.json left unchanged)")
            write_config(run_dir / "config.json", cfg)
        return tr

    def _write_metrics(self, rec: dict) -> None:
        if self.rank != 0:
            return
        # a regular file only (a FIFO named metrics.jsonl would block the open forever)
        fd = open_regular(self.run_dir / "metrics.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        if self.log:
            self.log(rec)

    def _truncate_metrics(self) -> None:
        """Drop metric lines beyond the checkpointed iteration (work lost by a crash is redone)."""
        if self.rank != 0:
            return
        path = self.run_dir / "metrics.jsonl"
        try:
            data = read_regular_file(path, MAX_METRICS_BYTES)
        except FileNotFoundError:
            return
        except OSError as e:
            raise LSR1Error(f"cannot read {path}: {e.strerror or e}; move it away to resume the run") from None
        # damaged lines (cut by a crash, not UTF-8, not an object, no integer iteration) are dropped, as are
        # the lines of iterations past the checkpoint (they are redone)
        records = parse_metric_lines(data)
        keep = [raw for raw, rec in records if rec["iteration"] <= self.iteration]
        dropped = sum(1 for line in data.split(b"\n") if line.strip()) - len(records)
        if dropped:
            print(f"note: {path}: {dropped} damaged line(s) skipped (not a JSON object with an integer iteration)",
                  file=sys.stderr)
        atomic_write_bytes(path, b"".join(raw + b"\n" for raw in keep))

    def save_best(self, iterations: int) -> None:
        """Write the current model as the run's best checkpoint (in the problem's format)."""
        self.problem.save_best(self.run_dir / "best", iterations=iterations,
                               metrics={"val_" + k: v for k, v in self.last_val.items()},
                               train_config=self.cfg.to_dict())

    def request_stop(self) -> None:
        """Ask fit() to checkpoint and return after the current meta-iteration."""
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called (fit() then returns early, checkpointed)."""
        return self._stop

    # --- the loop ---------------------------------------------------------------
    def validate(self) -> dict:
        return self.problem.validate()

    def train_step(self) -> dict:
        """One meta-iteration: the problem's meta-loss, its gradient (averaged over processes), clipped,
        one optimiser step. A non-finite loss (the sampled batch's run itself blew up), or finite gradients whose
        norm overflows, skip the step; a finite loss whose gradient has a NaN or infinite entry stops training
        (where the problem's ``stop_on_nonfinite_gradient`` is true, the default; otherwise it is skipped and the
        record names the terms) (:class:`NonFiniteMetaGradient`, naming the term whose own
        gradient is not finite) before any parameter changes, so the last checkpoint stays good."""
        loss, stats = self.problem.loss()
        terms = stats.pop(TERMS_KEY, None) if isinstance(stats, dict) else None
        self.opt.zero_grad(set_to_none=True)
        if self.world > 1:
            loss = self._all_reduce_mean(loss)
        if not torch.isfinite(loss):
            self.skipped += 1
            return {"meta_loss": None, "skipped": True, **stats}
        loss.backward(retain_graph=terms is not None)
        params = self.problem.parameters()
        if self.world > 1:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(self.world)
        if any(p.grad is not None and not bool(torch.isfinite(p.grad).all()) for p in params):
            self.opt.zero_grad(set_to_none=True)
            blown = self._blown_terms(terms, params)
            if not getattr(self.problem, "stop_on_nonfinite_gradient", True):
                self.skipped += 1
                return {"meta_loss": float(loss.detach()), "skipped": True, "nonfinite_terms": blown, **stats}
            what = ", ".join(blown) if blown else "the meta-loss (its terms are not reported by this problem)"
            raise NonFiniteMetaGradient(
                f"meta-training stopped at iteration {self.iteration + 1}: the meta-gradient is not finite "
                f"(meta-loss {float(loss.detach()):.4g} is finite); the term that blew up: {what}. The parameters were "
                f"not updated; the last good checkpoint is kept in {self.run_dir} (resume with a lower learning rate, "
                "a smaller secant weight or a shorter unroll)", iteration=self.iteration + 1, terms=tuple(blown))
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        if not torch.isfinite(gnorm):  # every entry is finite but the norm overflowed: skip this step
            self.opt.zero_grad(set_to_none=True)
            self.skipped += 1
            return {"meta_loss": float(loss.detach()), "skipped": True, **stats}
        self.opt.step()
        return {"meta_loss": float(loss.detach()), "grad_norm": float(gnorm), **stats}

    @staticmethod
    def _blown_terms(terms, params) -> list[str]:
        """The names of the meta-loss terms whose own gradient has a non-finite entry."""
        if not terms:
            return []
        names = list(terms)
        out = []
        for i, name in enumerate(names):
            t = terms[name]
            if not isinstance(t, torch.Tensor) or not t.requires_grad:
                continue
            grads = torch.autograd.grad(t, params, retain_graph=i < len(names) - 1, allow_unused=True)
            if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
                out.append(name)
        return out

    def _all_reduce_mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The global mean of the per-process losses, for logging and the finiteness check; the
        per-process loss keeps its graph (gradients are averaged after backward)."""
        val = loss.detach().clone()
        dist.all_reduce(val)
        return loss + (val / self.world - loss.detach())

    def fit(self, progress: bool = True, fresh: bool | None = None) -> TrainResult:
        cfg = self.cfg
        if fresh is None:
            fresh = not self._resumed and self.iteration == 0
        self._prepare_dir(fresh)
        if not fresh:
            self._truncate_metrics()
        if self.iteration == 0 and not self.last_val:
            self.last_val = self.validate()
            self.best_val = self.last_val["loss"]
            if self.rank == 0:
                self.save_best(0)
                if not fresh:  # a run killed before its first checkpoint starts over: no second iteration-0 line
                    atomic_write_bytes(self.run_dir / "metrics.jsonl", b"")
            self._write_metrics({"iteration": 0, **{"val_" + k: v for k, v in self.last_val.items()}})
        bar = None
        if progress and self.rank == 0:
            bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="meta-training", unit="it",
                       disable=os.environ.get("LSR1_NO_PROGRESS") == "1")
        t_start = time.perf_counter() - self.elapsed
        consecutive_skips = 0
        while self.iteration < cfg.iterations and not self._stop:
            try:
                rec = self.train_step()
            except NonFiniteMetaGradient:
                # the parameters are those of the last good iteration: keep them (the error says why it stopped)
                self.save_latest()
                if bar is not None:
                    bar.close()
                raise
            self.iteration += 1
            consecutive_skips = consecutive_skips + 1 if rec.get("skipped") else 0
            if consecutive_skips >= 50:
                self.save_latest()
                raise LSR1Error(f"meta-training diverged: 50 consecutive meta-iterations had a non-finite loss or "
                                f"gradient (at iteration {self.iteration}); lower the learning rate or gamma1")
            rec["iteration"] = self.iteration
            self.elapsed = time.perf_counter() - t_start
            rec["elapsed_s"] = round(self.elapsed, 3)
            if self.iteration % cfg.val_every == 0 or self.iteration == cfg.iterations:
                self.last_val = self.validate()
                rec.update({"val_" + k: v for k, v in self.last_val.items()})
                if self.last_val["loss"] < self.best_val:
                    self.best_val = self.last_val["loss"]
                    if self.rank == 0:
                        self.save_best(self.iteration)
                    rec["best"] = True
            self._write_metrics(rec)
            if self.iteration % cfg.ckpt_every == 0 or self.iteration == cfg.iterations:
                self.save_latest()
            if bar is not None:
                bar.update(1)
                if rec.get("meta_loss") is not None:
                    bar.set_postfix(loss=f"{rec['meta_loss']:.3g}", val=f"{self.best_val:.3g}")
        self.save_latest()
        self._resumed = True  # a second fit() on this trainer continues the same run
        if bar is not None:
            bar.close()
        return TrainResult(self.run_dir, self.iteration, self.best_val, self.last_val, self.elapsed, self.skipped)
