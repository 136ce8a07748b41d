"""The run directory's files and the runs root's lock: forgiving readers, atomic writers, the ``.lock``.

Every file is written by temp-file + fsync + rename (:func:`write_json`); the readers never raise on damaged
or hostile files (a FIFO, a huge file, a JSON list) — they return None or [] and :func:`json_problem` says why.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
from pathlib import Path

from ..checkpoints import atomic_write_bytes, open_regular, read_regular_file
from ..meta.registry import MAX_RUN_JSON_BYTES, read_metric_records

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: no cross-process lock
    fcntl = None

STATES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
# \Z, not $: '$' also matches before a trailing newline, so 'x\n' was accepted as a run id
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\Z")


def valid_run_id(run_id) -> bool:
    return isinstance(run_id, str) and _ID_RE.match(run_id) is not None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def root_lock(root: Path):
    """An exclusive lock for everything that reads and rewrites status files under ``root``."""
    if fcntl is None:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def lock_held_elsewhere(root: Path) -> bool:
    """Another holder has the runs root's lock right now (another process, or another open of it in this one).
    True where locks are not available (the caller then cannot tell, and assumes someone might hold it)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # (releases it where it was taken)
    return False


def log_tail(path: Path) -> str:
    """The last line of the run's log.txt (its last 4 kB only; a FIFO or device named log.txt is not read)."""
    try:
        fd = open_regular(path / "log.txt")
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - 4096), os.SEEK_SET)
        data = os.read(fd, 4096)
    except OSError:
        return ""
    finally:
        os.close(fd)
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1][-300:] if lines else ""


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when the file is missing, unreadable, not a regular file (a FIFO
    named status.json must never block a reader holding the runs root's lock), larger than 16 MB, not JSON or
    not an object."""
    try:
        obj = json.loads(read_regular_file(path, MAX_RUN_JSON_BYTES).decode())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def json_problem(path: Path) -> str:
    """Why :func:`read_json` gave None for ``path`` (for messages)."""
    try:
        obj = json.loads(read_regular_file(path, MAX_RUN_JSON_BYTES).decode())
    except FileNotFoundError:
        return "is missing"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "is corrupted (not JSON)"
    return f"is corrupted (a JSON {type(obj).__name__}, not an object)" if not isinstance(obj, dict) else "is fine"


def as_float(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
        return f if math.isfinite(f) else None
    return None


def write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All complete metric records of a run: UTF-8 JSON objects with an integer ``iteration`` (a line cut by
    a crash, or any other line, is skipped). [] when metrics.jsonl is missing, not a regular file (a FIFO
    never blocks this read) or larger than 256 MB."""
    try:
        return read_metric_records(run_dir)
    except OSError:
        return []
