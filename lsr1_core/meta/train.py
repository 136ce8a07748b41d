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
from ..learned.model import LSR1Net, init_state, lsr1_step
from ..learned.qn import qn_init_state, qn_step
from ..learned.secant import secant_penalty
from ..learned.solver import inference_mode
from .presets import TrainConfig
from .tasks import MetaTask


# A problem's loss() may return, under this key of its statistics, its meta-loss terms as tensors with their graphs;
# the trainer then names the term whose gradient is not finite when it stops (they are not logged).
TERMS_KEY = "_terms"
META_TERMS = ("objective term (f or log-gap over the unroll)", "secant term (λ_sec · ‖p − Hq‖²)")


def unroll(net: LSR1Net, objective, x0: torch.Tensor, steps: int, secant_weight: float,
           detach_gradient: bool = False, secant_form: str = "absolute",
           meta_loss: str = "value") -> tuple[torch.Tensor, dict]:
    """K unrolled L-SR1 steps; returns the meta-loss of Eq. 9 and per-run statistics.

    L_meta = (1/K) Σ_k [ mean_b f(x_k) + λ_sec · mean_b ‖p_k − B̃_k q_k‖² ]

    ``meta_loss="log_gap"`` replaces f(x_k) by log10((f(x_k) − f*)/(f(x_0) − f*)), which weighs every
    problem the same whatever its scale (the qn form's presets train on many scales at once).
    """
    if net.config.form == "qn":
        return _unroll_qn(net, objective, x0, steps, secant_weight, detach_gradient, secant_form, meta_loss)
    state = init_state(objective, x0)
    total = x0.new_zeros(())
    f_sum = x0.new_zeros(())
    sec_sum = x0.new_zeros(())
    f_term, s_term = x0.new_zeros(()), x0.new_zeros(())
    rel = []
    for _ in range(steps):
        state, out = lsr1_step(net, state, objective, detach_gradient=detach_gradient)
        f_k = state.f.mean()
        s_k = secant_penalty(out.secant, state.p, secant_form).mean()
        total = total + f_k + secant_weight * s_k
        f_term, s_term = f_term + f_k, s_term + secant_weight * s_k
        f_sum = f_sum + f_k.detach()
        sec_sum = sec_sum + s_k.detach()
        rel.append(out.secant_rel.detach().mean())
    loss = total / steps
    stats = {"f_mean": float(f_sum / steps), "f_final": float(state.f.detach().mean()),
             "secant": float(sec_sum / steps), "secant_rel": float(torch.stack(rel).mean()),
             TERMS_KEY: {META_TERMS[0]: f_term / steps, META_TERMS[1]: s_term / steps}}
    return loss, stats


def _unroll_qn(net, objective, x0, steps, secant_weight, detach_gradient, secant_form, meta_loss):
    """The qn form's unroll: the secant term is that of the textbook pair, H_{k+1} q_k = p_k."""
    state = qn_init_state(net, objective, x0)
    f0 = state.f.detach()
    fstar = objective.min_value() if meta_loss == "log_gap" else None
    if meta_loss == "log_gap":
        if fstar is None:
            raise LSR1Error("meta_loss 'log_gap' needs an objective with a known minimum value")
        gap0 = (f0 - fstar.detach()).clamp_min(torch.finfo(f0.dtype).tiny)
    total = x0.new_zeros(())
    f_term, s_term = x0.new_zeros(()), x0.new_zeros(())
    f_sum, sec_sum, rel, fired = 0.0, 0.0, [], []
    for _ in range(steps):
        state, out = qn_step(net, state, objective, detach_gradient=detach_gradient, max_halvings=12)
        if meta_loss == "log_gap":
            gap = (state.f - fstar).clamp_min(0) + 1e-8 * gap0  # floor: past 1e-8 the gradient only adds noise
            f_k = torch.log10(gap / gap0).mean()
        else:
            f_k = state.f.mean()
        # relative: mean(u²) = ‖p − Hq‖²/‖p‖² wherever the pair is used (skipped pairs carry no gradient)
        s_k = secant_penalty(out.secant, state.p, secant_form, relative=out.extras["departure"]).mean()
        total = total + f_k + secant_weight * s_k
        f_term, s_term = f_term + f_k, s_term + secant_weight * s_k
        f_sum += float(f_k.detach())
        sec_sum += float(s_k.detach())
        rel.append(out.secant_rel.detach().mean())
        fired.append(out.extras["safeguard"].float().mean())
    stats = {"f_mean": f_sum / steps, "f_final": float(state.f.detach().mean()), "secant": sec_sum / steps,
             "secant_rel": float(torch.stack(rel).mean()), "safeguard": float(torch.stack(fired).mean()),
             TERMS_KEY: {META_TERMS[0]: f_term / steps, META_TERMS[1]: s_term / steps}}
    if meta_loss == "log_gap":
        stats["log_gap_final"] = float(f_k.detach())
    return total / steps, stats


def evaluate(net: LSR1Net, objective, x0, steps: int, secant_weight: float, secant_form: str = "absolute",
             meta_loss: str = "value") -> dict:
    with torch.no_grad(), inference_mode(net, rows=x0.numel()):
        loss, stats = unroll(net, objective, x0, steps, secant_weight, secant_form=secant_form, meta_loss=meta_loss)
    stats.pop(TERMS_KEY, None)
    return {"loss": float(loss), **stats}


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


# bounds on what is read from a run directory: its JSON files are a few kB, metrics.jsonl ~0.3 kB a line
MAX_RUN_JSON_BYTES = 16 << 20
MAX_METRICS_BYTES = 256 << 20


def as_integer(v) -> int | None:
    """A JSON value read from a run file as an int (an integral float counts), None for anything else (bools too)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)
    return None


def parse_metric_lines(data: bytes) -> list[tuple[bytes, dict]]:
    """(raw line, record) for every complete metric record in a metrics.jsonl's bytes: a UTF-8 JSON object
    with an integer ``iteration`` (normalised to int). Anything else — a line cut by a crash, non-UTF-8
    bytes, a JSON list, number or string, a missing, string or null iteration — is skipped."""
    out = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if not isinstance(rec, dict):
            continue
        it = as_integer(rec.get("iteration"))
        if it is None:
            continue
        rec["iteration"] = it
        out.append((raw, rec))
    return out


def read_metric_records(run_dir: str | Path) -> list[dict]:
    """The run's complete metric records (see :func:`parse_metric_lines`); [] when metrics.jsonl is missing.
    ``OSError`` when it is not a regular file (a FIFO, a device) or larger than ``MAX_METRICS_BYTES``."""
    try:
        data = read_regular_file(Path(run_dir) / "metrics.jsonl", MAX_METRICS_BYTES)
    except FileNotFoundError:
        return []
    return [rec for _, rec in parse_metric_lines(data)]


def recorded_progress(run_dir: str | Path) -> tuple[int, str]:
    """How far a run's files other than ``latest.*`` show it got: (iteration, where), from its metric lines
    and its best checkpoint's card; (0, "") when they show no progress past iteration 0. Unreadable files
    count as showing nothing (their own readers report them)."""
    run_dir = Path(run_dir)
    best, where = 0, ""
    try:
        its = [rec["iteration"] for rec in read_metric_records(run_dir)]
    except OSError:
        its = []
    if its and max(its) > best:
        best, where = max(its), "metrics.jsonl"
    try:
        card = json.loads(read_regular_file(run_dir / "best.json", MAX_RUN_JSON_BYTES).decode())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        card = None
    it = as_integer(card.get("iterations")) if isinstance(card, dict) else None
    if it is not None and it > best:
        best, where = it, "best.json"
    return best, where


def check_latest_present(run_dir: str | Path) -> None:
    """``LSR1Error`` when a run's ``latest.*`` checkpoint is missing although its metrics or best checkpoint
    show it had progressed: resuming would start it over from iteration 0, wiping metrics.jsonl and
    overwriting best.* with an untrained model. A run killed before its first checkpoint (nothing past
    iteration 0) may start over."""
    run_dir = Path(run_dir)
    if (run_dir / "latest.json").exists():
        return
    done, where = recorded_progress(run_dir)
    if done > 0:
        raise LSR1Error(f"{run_dir} has no latest checkpoint (latest.json is missing) although its {where} shows it "
                        f"reached iteration {done}; resuming would start it over and overwrite metrics.jsonl and "
                        "best.*, so it is refused. Restore latest.json and its latest.*.safetensors, or start a "
                        "new run (the best model so far is still in best.*)")
    orphans = sorted(p.name for p in run_dir.glob("latest.*.safetensors"))
    if orphans:
        raise LSR1Error(f"{run_dir} has latest weights ({orphans[0]}) but no latest.json naming them; the run "
                        "cannot be resumed safely (restore latest.json, or start a new run)")


def _write_config(path: Path, cfg) -> None:
    atomic_write_bytes(path, (json.dumps(cfg.to_dict(), indent=2) + "\n").encode())


def read_run_config(run_dir: str | Path, config_class: type = TrainConfig):
    """A run directory's validated config; ``LSR1Error`` (never the defaults) when config.json is missing,
    corrupted or invalid."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        raise LSR1Error(f"{run_dir} is not a run directory (no config.json); a run cannot be resumed without "
                        "its config (never the defaults)")
    try:
        d = json.loads(read_regular_file(cfg_path, MAX_RUN_JSON_BYTES).decode())
    except OSError as e:
        raise LSR1Error(f"cannot read {cfg_path}: {e.strerror or e}; the run cannot be resumed") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise LSR1Error(f"{cfg_path} is corrupted ({type(e).__name__}: {e}); the run cannot be resumed") from None
    if not isinstance(d, dict):
        raise LSR1Error(f"{cfg_path} is corrupted (a JSON {type(d).__name__}, not an object); "
                        "the run cannot be resumed")
    d = {k: v for k, v in d.items() if k != "problem"}  # the run's problem kind (meta.registry), not a field
    try:
        return config_class.from_dict(d)
    except LSR1Error as e:
        raise LSR1Error(f"{cfg_path} is not a valid training config: {e}") from None
    except (TypeError, AttributeError, OverflowError) as e:
        raise LSR1Error(f"{cfg_path} is not a valid training config ({type(e).__name__}: {e})") from None


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
            _write_config(self.run_dir / "config.json", self.cfg)

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
            _write_config(run_dir / "config.json", cfg)
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
            except NonFiniteMetaGradient as e:
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
