"""Checkpoints: weights in safetensors plus a JSON model card. Nothing is ever unpickled.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``. The card records the
kind of model, its config, the preset and iterations it was trained with, validation metrics,
the library version, the date, and the SHA-256 of the weights file, which loading verifies
(so a truncated or swapped file is refused before any tensor is read).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CheckpointError

FORMAT = "lsr1-explorer-checkpoint"
FORMAT_VERSION = 1


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except Exception:
        return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, flush, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints and cards are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_tensors_and_card(path: str | Path, tensors: dict[str, torch.Tensor], card: dict,
                          versioned: bool = False) -> Path:
    """Save ``tensors`` and ``card`` atomically (weights first, then the card that names their hash).

    With ``versioned=True`` the weights go to ``NAME.<hash>.safetensors`` and the previous version is
    deleted only after the new card is in place, so a process killed at any moment leaves a card
    whose weights file exists and matches (used for the resume state of runs).
    """
    wpath, cpath = _paths(path)
    wpath.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=wpath.parent, prefix=f".{wpath.name}.", suffix=".tmp")
    os.close(fd)
    old_versions = sorted(wpath.parent.glob(f"{cpath.stem}.*.safetensors")) if versioned else []
    try:
        save_file(tensors, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(Path(tmp))
        os.chmod(tmp, 0o644)
        if versioned:
            wpath = wpath.with_name(f"{cpath.stem}.{digest[:16]}.safetensors")
        os.replace(tmp, wpath)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    card = dict(card)
    card.update(format=FORMAT, format_version=FORMAT_VERSION, weights_file=wpath.name, weights_sha256=digest)
    atomic_write_bytes(cpath, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    for old in old_versions:
        if old.name != wpath.name:
            try:
                old.unlink()
            except OSError:
                pass
    return cpath


def load_tensors_and_card(path: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    wpath, cpath = _paths(path)
    if not cpath.exists():
        raise CheckpointError(f"no model card at {cpath} (a checkpoint is NAME.safetensors + NAME.json)")
    try:
        card = json.loads(cpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"model card {cpath} is not valid JSON ({e}); the file is corrupted or not a card")
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{cpath} is not an L-SR1 Explorer model card (format={card.get('format') if isinstance(card, dict) else None!r})")
    if card.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{cpath} has card format {card['format_version']}, newer than this library "
                              f"understands ({FORMAT_VERSION}); upgrade lsr1_core")
    if kind is not None and card.get("kind") != kind:
        raise CheckpointError(f"{cpath} holds a {card.get('kind')!r} checkpoint, not a {kind!r} one")
    named = card.get("weights_file")
    if isinstance(named, str) and named and Path(named).name == named:  # a bare file name, never a path
        wpath = cpath.with_name(named)
    if not wpath.exists():
        raise CheckpointError(f"model card {cpath} found but its weights file {wpath} is missing")
    digest = sha256_file(wpath)
    if digest != card.get("weights_sha256"):
        raise CheckpointError(f"weights file {wpath} does not match its card (SHA-256 {digest[:12]}… vs "
                              f"{str(card.get('weights_sha256'))[:12]}…): it is truncated, corrupted or from another checkpoint")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"could not read {wpath} as safetensors: {e}")
    return tensors, card


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def model_card(net, *, preset: str | None = None, iterations: int | None = None, metrics: dict | None = None,
               extra: dict | None = None) -> dict:
    card = {
        "kind": "lsr1",
        "config": net.config.to_dict(),
        "preset": preset,
        "iterations": iterations,
        "metrics": metrics or {},
        "num_parameters": net.num_parameters(),
        "library_version": __version__,
        "torch_version": torch.__version__,
        "date": _now(),
        "commit": git_commit(),
    }
    if extra:
        card.update(extra)
    return card


def save_model(path: str | Path, net, versioned: bool = False, **card_kwargs) -> Path:
    """Save an :class:`~lsr1_core.learned.model.LSR1Net` as safetensors + JSON card."""
    return save_tensors_and_card(path, net.state_dict(), model_card(net, **card_kwargs), versioned=versioned)


def load_model(path: str | Path, device=None, dtype=torch.float32):
    """Load an L-SR1 model and its card; refuses mismatched, truncated or foreign files."""
    from .learned.model import LSR1Config, LSR1Net

    tensors, card = load_tensors_and_card(path, kind="lsr1")
    try:
        config = LSR1Config.from_dict(card["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"model card of {path} has an invalid config: {e}")
    net = LSR1Net(config)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the model its card describes: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(tensors[k].shape)]
    if wrong:
        raise CheckpointError(f"checkpoint {path} has tensors of the wrong shape for its config: {wrong[:5]}")
    net.load_state_dict(tensors)
    net.to(device=device or "cpu", dtype=dtype)
    return net, card
