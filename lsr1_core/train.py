"""Command line: meta-train an L-SR1 model.

    python -m lsr1_core.train --preset quadratic --iterations 2000 --run-dir runs/quadratic
    python -m lsr1_core.train --resume runs/quadratic --iterations 4000
    python -m lsr1_core.train --preset quadratic --set secant_weight=0 --set model.memory=4 ...
    python -m lsr1_core.train --list-presets
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import LSR1Error
from .meta.presets import PRESETS, preset
from .meta.train import Trainer


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise LSR1Error(f"--set expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        if key.startswith("model."):
            out.setdefault("model", {})[key[len("model."):]] = _parse_value(val)
        else:
            out[key] = _parse_value(val)
    return out


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
    if args.distributed:
        import torch
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(__import__("os").environ.get("LOCAL_RANK", 0)))
    try:
        if args.list_presets:
            for name in sorted(PRESETS):
                print(name, json.dumps(preset(name).to_dict()))
            return 0
        if args.resume:
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
            tr = Trainer(preset(args.preset, **overrides), args.run_dir)
        res = tr.fit(progress=not args.no_progress)
        if args.dump_final_params:
            from safetensors.torch import save_file
            from pathlib import Path
            Path(args.dump_final_params).mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in tr.net.state_dict().items()},
                      str(Path(args.dump_final_params) / f"rank{tr.rank}.safetensors"))
        if tr.rank != 0:
            return 0
    except LSR1Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        tr.save_latest()
        print(f"\ninterrupted; saved the latest checkpoint in {tr.run_dir} (resume with --resume)", file=sys.stderr)
        return 130
    print(json.dumps({"run_dir": str(res.run_dir), "iterations": res.iterations, "best_val_loss": res.best_val,
                      "last_val": res.last_val, "wall_time_s": round(res.wall_time_s, 1), "skipped": res.skipped}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
