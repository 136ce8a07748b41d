"""Command line: meta-train an L-SR1 model.

    python -m lsr1_core.train --preset quadratic --iterations 2000 --run-dir runs/quadratic
    python -m lsr1_core.train --resume runs/quadratic --iterations 4000
    python -m lsr1_core.train --preset quadratic --set secant_weight=0 --set model.memory=4 ...
    python -m lsr1_core.train --list-presets
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import types
import typing
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from .errors import LSR1Error
from .meta.presets import PRESETS, TrainConfig, preset
from .meta.train import Trainer


def _parse_value(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list " + str([_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis])
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(tp)))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _fits(value, tp) -> bool:
    """Whether a JSON value has the type of a config field's annotation (unknown annotations: yes)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is type(None):
        return value is None
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return True


def check_override_types(overrides: dict, cls=None, prefix: str = "") -> None:
    """``LSR1Error`` naming the first override whose value has the wrong type for its config field
    (``lr=abc``, ``lr=true``, ``betas=5``, ``model=3``, ``model.dropout=abc``); unknown keys are left to
    the config, which lists the known ones."""
    cls = cls or TrainConfig
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation this check cannot evaluate: the config's own validation still runs
        return
    for key, value in overrides.items():
        tp = hints.get(key)
        if tp is None:
            continue
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise LSR1Error(f"--set {prefix}{key}: give its fields as {prefix}{key}.FIELD=VALUE, got {value!r}")
            check_override_types(value, tp, prefix=f"{prefix}{key}.")
        elif not _fits(value, tp):
            raise LSR1Error(f"--set {prefix}{key}={json.dumps(value)}: {prefix}{key} must be {_type_name(tp)}")


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise LSR1Error(f"--set expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        if key.startswith("model."):
            model = out.setdefault("model", {})
            if not isinstance(model, dict):
                raise LSR1Error("--set model=... and model.FIELD=... cannot be combined")
            model[key[len("model."):]] = _parse_value(val)
        else:
            out[key] = _parse_value(val)
    check_override_types(out)
    return out


def config_from_preset(name: str, overrides: dict):
    """``preset(name, **overrides)`` with every failure an ``LSR1Error`` (a wrong type the checks above
    missed reaches the config as a TypeError)."""
    try:
        return preset(name, **overrides)
    except LSR1Error:
        raise
    except (TypeError, AttributeError, OverflowError) as e:
        raise LSR1Error(f"invalid --set value: {e}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lsr1_core.train", description="Meta-train an L-SR1 optimizer.")
    ap.add_argument("--preset", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--run-dir", help="directory for config, metrics.jsonl and checkpoints")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    ap.add_argument("--iterations", type=int, help="total meta-iterations (overrides the preset)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--device", help="cpu, cuda or auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any TrainConfig field; model fields as model.KEY (repeatable)")
    ap.add_argument("--distributed", action="store_true",
                    help="data-parallel over processes started by torchrun (gloo on CPU, NCCL on GPUs)")
    ap.add_argument("--dump-final-params", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--compile", action="store_true", help="torch.compile the MLPs (faster after ~20 s)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--list-presets", action="store_true")
    args = ap.parse_args(argv)
    if args.seed is not None and not 0 <= args.seed < 2**63:
        print(f"error: --seed must be an integer in [0, 2**63), got {args.seed}", file=sys.stderr)
        return 2
    if args.distributed:
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            print(f"error: --distributed needs the processes started by torchrun (e.g. torchrun --nproc-per-node 2 "
                  f"-m lsr1_core.train --distributed ...); {', '.join(missing)} not set", file=sys.stderr)
            return 2
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        try:
            dist.init_process_group(backend=backend)
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        except (ValueError, RuntimeError) as e:
            print(f"error: could not join the torchrun process group: {str(e).splitlines()[0] if str(e) else e}",
                  file=sys.stderr)
            return 2
    tr = None
    previous_sigint = None

    def on_sigint(signum, frame):
        # The first Ctrl-C asks the trainer to stop after the current meta-iteration: its metric line is
        # written, then the loop checkpoints (a checkpoint taken mid-iteration lost that line and changed the
        # final model on resume, issue 24 item 3). A second Ctrl-C quits at once; the run then resumes from
        # its last checkpoint, redoing the iterations after it.
        if tr is not None and not tr.stop_requested:
            tr.request_stop()
            print("\nstopping after this meta-iteration (Ctrl-C again to quit now; the run would then resume from "
                  "its last checkpoint)", file=sys.stderr)
        else:
            raise KeyboardInterrupt

    try:
        if args.list_presets:
            for name in sorted(PRESETS):
                print(name, json.dumps(preset(name).to_dict()))
            return 0
        if args.resume:
            given = [flag for flag, v in (("--preset", args.preset), ("--set", args.set), ("--seed", args.seed),
                                          ("--device", args.device), ("--compile", args.compile),
                                          ("--run-dir", args.run_dir)) if v not in (None, [], False)]
            if given:
                raise LSR1Error(f"--resume continues a run with its own config.json; {', '.join(given)} cannot be "
                                "combined with it (only --iterations can; start a new run to change anything else)")
            tr = Trainer.resume(args.resume, iterations=args.iterations)
        else:
            if not args.preset or not args.run_dir:
                ap.error("give --preset and --run-dir for a new run, or --resume RUN_DIR")
            overrides = parse_overrides(args.set)
            if args.compile:
                overrides["compile"] = True
            for key in ("iterations", "seed", "device"):
                if getattr(args, key) is not None:
                    overrides[key] = getattr(args, key)
            tr = Trainer(config_from_preset(args.preset, overrides), args.run_dir)
        if threading.current_thread() is threading.main_thread():
            previous_sigint = signal.signal(signal.SIGINT, on_sigint)
        res = tr.fit(progress=not args.no_progress)
        if tr.stop_requested and res.iterations < tr.cfg.iterations:
            if tr.rank == 0:
                print(f"\ninterrupted at iteration {res.iterations}; saved the latest checkpoint in {tr.run_dir} "
                      "(resume with --resume)", file=sys.stderr)
            return 130
        if args.dump_final_params:
            Path(args.dump_final_params).mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in tr.net.state_dict().items()},
                      str(Path(args.dump_final_params) / f"rank{tr.rank}.safetensors"))
        if tr.rank != 0:
            return 0
    except LSR1Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk while writing metrics: every checkpoint on disk is intact
        print(f"error: {e.strerror or e}: {e.filename or ''} (the latest checkpoint is intact; resume with "
              "--resume once there is room)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if tr is None:
            print("\ninterrupted before training started", file=sys.stderr)
            return 130
        # no checkpoint here: the interrupt may have come in the middle of an iteration (model stepped, metric
        # line not written); the last checkpoint is consistent and resume redoes what came after it
        print(f"\ninterrupted; {tr.run_dir} resumes from its last checkpoint with --resume", file=sys.stderr)
        return 130
    finally:
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)
    print(json.dumps({"run_dir": str(res.run_dir), "iterations": res.iterations, "best_val_loss": res.best_val,
                      "last_val": res.last_val, "wall_time_s": round(res.wall_time_s, 1), "skipped": res.skipped}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
