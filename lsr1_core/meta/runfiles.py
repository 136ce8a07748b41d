"""A run directory's files as the trainer and the runs manager read them: config.json, metrics.jsonl and the
progress they show (bounded reads of regular files only; damaged lines are skipped, never trusted).

(Moved from :mod:`lsr1_core.meta.train`, which still exports every name.)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..checkpoints import atomic_write_bytes, read_regular_file
from ..errors import LSR1Error
from .presets import TrainConfig


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


def write_config(path: Path, cfg) -> None:
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
