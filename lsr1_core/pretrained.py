"""Shipped pretrained L-SR1 models: list, load, and reproduce them from their cards.

    python -m lsr1_core.pretrained list
    python -m lsr1_core.pretrained train quadratic --iterations 3000     # (re)train and ship one
    python -m lsr1_core.pretrained reproduce quadratic                    # retrain exactly as its card says
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from .checkpoints import PRETRAINED_DIR, git_commit, load_tensors_and_card, save_tensors_and_card
from .learned.io import load_model
from .errors import LSR1Error, UnknownNameError, run_cli
from .meta import Trainer, TrainConfig, preset



def list_pretrained(directory: Path | None = None) -> dict[str, dict]:
    """name → card for every checkpoint in ``pretrained/`` (cards that do not parse are skipped)."""
    directory = Path(directory or PRETRAINED_DIR)
    out = {}
    for card_path in sorted(directory.glob("*.json")):
        try:
            card = json.loads(card_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            continue
        if isinstance(card, dict) and card.get("kind") == "lsr1":
            out[card_path.stem] = card
    return out


def learned_status(name: str, directory: Path | None = None) -> str:
    """What a shipped checkpoint actually learned, said plainly (issue 22; :func:`lsr1_core.meta.heldout.describe`)."""
    from .learned.io import load_model
    from .meta.heldout import describe

    return describe(*load_model(pretrained_path(name, directory)))


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\Z")


def check_name(name) -> str:
    """A model name is a bare file stem in ``pretrained/`` (letters, digits, '_', '.', '-'), never a path."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise LSR1Error(f"model name {name!r} may only use letters, digits, '_', '.', '-' (a file name in "
                        "pretrained/, never a path)")
    return name


def pretrained_path(name: str, directory: Path | None = None) -> Path:
    directory = Path(directory or PRETRAINED_DIR)
    check_name(name)
    if not (directory / f"{name}.json").is_file():
        avail = sorted(list_pretrained(directory))
        raise UnknownNameError(f"no pretrained model {name!r} in {directory}; available: {avail}")
    return directory / name


def load_pretrained(name: str, device=None, dtype=None):
    return load_model(pretrained_path(name), device=device, dtype=dtype or torch.float32)


def train_and_ship(name: str, cfg: TrainConfig, *, preset_name: str | None = None, run_root: Path = Path("runs/pretrained"),
                   out_dir: Path | None = None, progress: bool = True) -> Path:
    """Train ``cfg`` (resuming a previous chunk if its run directory exists) and copy the best
    checkpoint to ``pretrained/NAME`` with a card that records how it was made."""
    check_name(name)  # `train ../../x` used to write outside pretrained/ and runs/pretrained/
    out_dir = Path(out_dir or PRETRAINED_DIR)
    run_dir = Path(run_root) / name
    t0 = time.time()
    if (run_dir / "latest.json").exists():
        tr = Trainer.resume(run_dir, iterations=cfg.iterations)
    else:
        tr = Trainer(cfg, run_dir)
    stopped = None
    try:
        res = tr.fit(progress=progress)
        iterations, wall = res.iterations, res.wall_time_s
    except LSR1Error as e:  # e.g. meta-training diverged: ship the best model before it, and say so
        stopped = str(e)
        iterations, wall = tr.iteration, tr.elapsed
    tensors, card = load_tensors_and_card(run_dir / "best", kind="lsr1")
    card.update({
        "name": name,
        "preset": card.get("preset") or preset_name,
        "iterations_run": iterations,
        "iterations_requested": cfg.iterations,
        "training_stopped_early": stopped,
        "best_at_iteration": card.get("iterations"),
        "wall_time_s_total": round(wall, 1),
        "wall_time_s_this_call": round(time.time() - t0, 1),
        "trained_by_commit": git_commit(),
        "train_config": cfg.replace(iterations=iterations).to_dict(),
        "reproduce": f"python -m lsr1_core.pretrained reproduce {name}",
    })
    save_tensors_and_card(out_dir / name, tensors, card)
    return out_dir / name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lsr1_core.pretrained")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    t = sub.add_parser("train", help="train a preset and ship its best checkpoint under NAME")
    t.add_argument("name")
    t.add_argument("--preset", help="defaults to NAME")
    t.add_argument("--iterations", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--compile", action="store_true")
    r = sub.add_parser("reproduce", help="retrain a shipped checkpoint from its card's config")
    r.add_argument("name")
    r.add_argument("--out-dir", default=None, help="where to write (default: overwrite pretrained/)")
    s = sub.add_parser("train-scalars", help="learn the qn form's family-level scalars (diagonal metric, H0 scale) "
                                             "by ES and ship them under NAME if they beat the untrained start")
    s.add_argument("name")
    s.add_argument("--family", required=True, help="problem family (see lsr1_core.meta.families.FAMILIES)")
    s.add_argument("--params", default="diag,gamma", help="comma-separated scalars to learn: diag, gamma")
    s.add_argument("--iterations", type=int, default=40)
    s.add_argument("--sigma", type=float, default=0.15)
    s.add_argument("--pairs", type=int, default=2)
    s.add_argument("--lr", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--held-seeds", type=int, default=4)
    s.add_argument("--train-pool", type=int, default=None, help="draw training problems from this many fixed seeds "
                                                                "(families with expensive f*)")
    s.add_argument("--out-dir", default=None, help="where to write (default: pretrained/)")
    s.add_argument("--force", action="store_true", help="write the card even where it does not beat its untrained "
                                                        "start (it then says so)")
    c = sub.add_parser("compare", help="held-out comparison of a card against its untrained start and L-BFGS at "
                                       "equal evaluations")
    c.add_argument("name")
    c.add_argument("--family", default=None, help="default: the family the card was trained on")
    c.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args(argv)
    return run_cli(lambda: _command(args))


def _command(args) -> int:
    if args.cmd == "list":
        for name, card in list_pretrained().items():
            m = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
            try:
                status = learned_status(name)
            except LSR1Error as e:
                status = f"cannot be loaded: {e}"
            held = card.get("heldout") if isinstance(card.get("heldout"), dict) else {}
            try:
                d = held["mean_over_budgets"]["trained_vs_untrained"]
                where = (f"family={card.get('family')} held-out vs untrained {float(d['mean']):+.2f} "
                         f"[{float(d['lo']):+.2f}, {float(d['hi']):+.2f}]")
            except (KeyError, TypeError, ValueError):
                where = f"preset={card.get('preset')} val_loss={m.get('val_loss')}"
            print(f"{name:28s} {where} iterations={card.get('iterations_run')} — {status}")
        return 0
    if args.cmd == "train":
        check_name(args.name)
        pname = args.preset or args.name
        cfg = preset(pname, iterations=args.iterations, seed=args.seed, compile=args.compile)
        print(train_and_ship(args.name, cfg, preset_name=pname))
        return 0
    if args.cmd == "train-scalars":
        return _train_scalars(args.name, args.family, args.params.split(","), args.iterations, args.sigma, args.pairs,
                              args.lr, args.seed, args.held_seeds, args.out_dir, args.force, args.train_pool)
    if args.cmd == "compare":
        from .meta.heldout import compare_card, format_comparison

        target = Path(args.name) if ("/" in args.name or args.name.endswith(".json")) else pretrained_path(args.name)
        print(format_comparison(compare_card(target, family=args.family, n_seeds=args.seeds)))
        return 0
    if args.cmd == "reproduce":
        _, card = load_tensors_and_card(pretrained_path(args.name), kind="lsr1")
        ts = card.get("trained_scalars")
        if isinstance(ts, dict):
            try:
                return _train_scalars(args.name, ts["family"], list(ts["params"]), int(ts["iterations"]),
                                      float(ts["sigma"]), int(ts["pairs"]), float(ts["lr"]), 0, 4, args.out_dir, True,
                                      ts.get("train_pool"))
            except (KeyError, TypeError, ValueError) as e:
                raise LSR1Error(f"the card of {args.name} has an invalid trained_scalars record: {e}") from None
        if not isinstance(card.get("train_config"), dict):
            raise LSR1Error(f"the card of {args.name} has no train_config; it cannot be reproduced")
        try:
            cfg = TrainConfig.from_dict(card["train_config"])
        except (TypeError, AttributeError) as e:
            raise LSR1Error(f"the card of {args.name} has an invalid train_config: {e}") from None
        out = Path(args.out_dir) if args.out_dir else None
        print(train_and_ship(args.name, cfg, preset_name=card.get("preset"), run_root=Path("runs/reproduce"),
                             out_dir=out))
        return 0
    return 1


def _train_scalars(name, family, params, iterations, sigma, pairs, lr, seed, held_seeds, out_dir, force,
                   train_pool=None) -> int:
    from .meta import scalars

    check_name(name)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations <= 10_000:
        raise LSR1Error(f"--iterations must be an integer in [0, 10000], got {iterations!r}")
    if not isinstance(held_seeds, int) or not 1 <= held_seeds <= 100:
        raise LSR1Error(f"--held-seeds must be an integer in [1, 100], got {held_seeds!r}")
    fam = scalars.check_family(family)
    params = scalars.check_params([p.strip() for p in params])
    result = scalars.train(fam, params, iterations=iterations, sigma=sigma, pairs=pairs, lr=lr, seed=seed,
                           train_pool=train_pool, log=print)
    held = scalars.heldout(fam, scalars.config_for(result["theta"], params), scalars.base_config(),
                           n_seeds=held_seeds)
    from .meta.heldout import format_comparison

    print(format_comparison(held))
    print(scalars.ship(name, result, held, Path(out_dir or PRETRAINED_DIR), force=force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
