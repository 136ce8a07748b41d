"""Checkpoints: weights in safetensors plus a JSON model card. Nothing is ever unpickled.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``. The card records the
kind of model, its config, the preset and iterations it was trained with, validation metrics,
the library version, the date, and the SHA-256 of the weights file, which loading verifies
(so a truncated or swapped file is refused before any tensor is read).

Loading checks, in this order and before any tensor or model is built: the card path (a regular file,
not a directory or device), the card (a JSON object of this format, an integer ``format_version``), the
weights file the card names (a bare file name of a regular file in the card's own directory, never a path
or a link leading elsewhere), its SHA-256, then the safetensors header (parsed by hand: names, dtypes,
shapes and byte ranges consistent with the file size). ``load_model`` also compares the header's tensor
names and shapes with those of the model the card's config describes, built on the ``meta`` device (no
memory, no time), so a card edited to ``hidden = 12000`` is refused in milliseconds instead of allocating
gigabytes first.
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import math
import os
import stat
import struct
import subprocess
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CheckpointError

# the shipped checkpoints (L-SR1 presets and HMR models), next to the package in a checkout
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
FORMAT = "lsr1-explorer-checkpoint"
FORMAT_VERSION = 1


def _paths(path: str | Path) -> tuple[Path, Path]:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise CheckpointError(f"a checkpoint path must be a non-empty path, got {path!r}")
    p = Path(path)
    if not p.name or p.name in (".", ".."):
        raise CheckpointError(f"{path!r} is not a checkpoint path (give NAME for NAME.safetensors + NAME.json)")
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """A file descriptor of ``path`` opened as a regular file only: the open never blocks (``O_NONBLOCK``:
    a FIFO, a socket or a device named like a run or checkpoint file cannot hang the caller, e.g. while
    it holds the runs root's lock) and anything that is not a regular file is refused with an ``OSError``
    naming what it is. ``flags`` may add ``O_WRONLY | O_APPEND | O_CREAT`` (for appending)."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if e.errno == errno.ENXIO:  # O_WRONLY|O_NONBLOCK on a FIFO without a reader
            raise OSError(errno.EINVAL, "not a regular file (a FIFO)", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({_kind_of(st.st_mode)})", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes`` (see :func:`open_regular`); an
    ``OSError`` (``FileNotFoundError`` when missing) otherwise. Reads at most ``max_bytes + 1`` bytes, so a
    huge or growing file costs no more than the bound."""
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes, which no such file should be", str(path))
    return data


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as fh:
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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (OSError, SafetensorError)):  # e.g. a full disk: the previous checkpoint is intact
            raise CheckpointError(f"could not write checkpoint {wpath} ({e}); the previous checkpoint is "
                                  "unchanged (is the disk full?)") from None
        raise
    card = dict(card)
    card.update(format=FORMAT, format_version=FORMAT_VERSION, weights_file=wpath.name, weights_sha256=digest)
    try:
        atomic_write_bytes(cpath, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    except OSError as e:
        if versioned and wpath.exists():
            try:
                wpath.unlink()  # the old card still names the old weights, which are kept
            except OSError:
                pass
        raise CheckpointError(f"could not write model card {cpath} ({e.strerror or e}); the previous checkpoint "
                              "is unchanged (is the disk full?)") from None
    for old in old_versions:
        if old.name != wpath.name:
            try:
                old.unlink()
            except OSError:
                pass
    return cpath


_MAX_CARD_BYTES = 16 << 20
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
_ST_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                   "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8, "C128": 16}


def read_card(path: str | Path, kind: str | None = None) -> tuple[dict, Path]:
    """The model card of checkpoint ``path`` (validated) and the path of the weights file it names
    (checked to be a regular file in the card's directory). Reads no tensor."""
    wpath, cpath = _paths(path)
    if cpath.exists() and not cpath.is_file():
        raise CheckpointError(f"{cpath} is not a file (a directory or a device); a checkpoint is "
                              "NAME.safetensors + NAME.json")
    if not cpath.exists():
        raise CheckpointError(f"no model card at {cpath} (a checkpoint is NAME.safetensors + NAME.json)")
    try:
        if cpath.stat().st_size > _MAX_CARD_BYTES:
            raise CheckpointError(f"model card {cpath} is larger than {_MAX_CARD_BYTES >> 20} MB; not a card")
        card = json.loads(read_regular_file(cpath, _MAX_CARD_BYTES).decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"model card {cpath} is not valid JSON ({type(e).__name__}: {e}); the file is "
                              "corrupted or not a card") from None
    except OSError as e:
        raise CheckpointError(f"cannot read model card {cpath}: {e.strerror or e}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        fmt = card.get("format") if isinstance(card, dict) else None
        raise CheckpointError(f"{cpath} is not an L-SR1 Explorer model card (format={fmt!r})")
    version = card.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise CheckpointError(f"{cpath} has an invalid format_version {version!r} (expected an integer)")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{cpath} has card format {version}, newer than this library "
                              f"understands ({FORMAT_VERSION}); upgrade lsr1_core")
    if kind is not None and card.get("kind") != kind:
        raise CheckpointError(f"{cpath} holds a {card.get('kind')!r} checkpoint, not a {kind!r} one")
    return card, weights_path(cpath, card, default=wpath)


def weights_path(card_path: str | Path, card: dict, default: Path | None = None) -> Path:
    """The weights file a card names: a bare file name (never a path) of a regular file in the card's
    directory, not a link leading out of it. ``CheckpointError`` otherwise. Use this before serving or
    reading a card's weights (the Meta-training page's download does)."""
    cpath = Path(card_path)
    named = card.get("weights_file") if isinstance(card, dict) else None
    if named is None and default is not None:
        wpath = default
    elif (isinstance(named, str) and named and named not in (".", "..") and Path(named).name == named
          and "\x00" not in named and "/" not in named and "\\" not in named):
        wpath = cpath.with_name(named)
    else:
        raise CheckpointError(f"model card {cpath} names an invalid weights file {named!r} (it must be a bare "
                              "file name next to the card)")
    if not wpath.exists():
        raise CheckpointError(f"model card {cpath} found but its weights file {wpath} is missing")
    if not wpath.is_file():
        raise CheckpointError(f"the weights file {wpath} named by {cpath} is not a regular file")
    if wpath.resolve().parent != cpath.resolve().parent:
        raise CheckpointError(f"the weights file {wpath} named by {cpath} leads outside the checkpoint's directory")
    return wpath


def read_safetensors_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name → (dtype, shape) from a safetensors file's header, without reading any tensor. Checks that the
    header is a JSON object of well-formed entries whose byte ranges fit the file and their shapes."""
    path = Path(path)
    try:
        with os.fdopen(open_regular(path), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(f"{path} has a safetensors header length ({n}) beyond the file")
            raw = fh.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path} has a corrupted safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupted safetensors header (not a JSON object)")
    data_len = size - 8 - n
    out = {}
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(entry, dict) and entry.get("dtype") in _ST_DTYPE_BYTES
              and isinstance(entry.get("shape"), list) and isinstance(entry.get("data_offsets"), list)
              and len(entry["data_offsets"]) == 2
              and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                      for s in entry["shape"] + entry["data_offsets"]))
        if ok:
            start, end = entry["data_offsets"]
            ok = start <= end <= data_len and end - start == math.prod(entry["shape"]) * _ST_DTYPE_BYTES[entry["dtype"]]
        if not ok:
            raise CheckpointError(f"{path} has a malformed safetensors header entry for {str(name)[:80]!r}")
        out[name] = (entry["dtype"], tuple(entry["shape"]))
        data_end = max(data_end, entry["data_offsets"][1])
    if data_end != data_len:
        # a safetensors file ends where its last tensor does: a file much larger than its header says (a huge
        # or sparse file dressed as weights) is refused before it is hashed or read (issue 24, item 6)
        raise CheckpointError(f"{path} is {size} bytes but its safetensors header accounts for {8 + n + data_end}; "
                              "it is truncated, padded or not a safetensors file")
    return out


_DTYPE_FAMILY = {**{k: "floating-point" for k in ("F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3")},
                 **{k: "integer" for k in ("I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64")},
                 "BOOL": "boolean", "C64": "complex", "C128": "complex"}


def _family(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "boolean"
    if dtype.is_complex:
        return "complex"
    return "floating-point" if dtype.is_floating_point else "integer"


def check_header_dtypes(path: str | Path, expected: dict[str, torch.dtype], what: str = "checkpoint") -> None:
    """``CheckpointError`` unless every tensor ``expected`` names has, in the safetensors header, a dtype of
    the same kind (floating-point, integer, boolean) as the model's: an ``I64`` header over float weights
    would load as values around 10¹⁸ although the card's hash matches (issue 24, item 17)."""
    header = read_safetensors_header(path)
    wrong = [f"{k}: {header[k][0]} (the model expects {_family(dt)})" for k, dt in expected.items()
             if k in header and _DTYPE_FAMILY.get(header[k][0]) != _family(dt)]
    if wrong:
        raise CheckpointError(f"{what} {path} declares tensors of the wrong kind for its card's model: "
                              f"{wrong[:3]}; the file was edited or is not this model's weights")


def check_header_shapes(path: str | Path, expected: dict[str, tuple[int, ...]], what: str = "checkpoint") -> None:
    """``CheckpointError`` unless the safetensors file at ``path`` holds exactly the tensors ``expected``
    names, with those shapes (read from its header only)."""
    header = read_safetensors_header(path)
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{what} {path} does not fit the model its card describes: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    wrong = [f"{k} {header[k][1]} (card's config implies {tuple(expected[k])})"
             for k in expected if tuple(header[k][1]) != tuple(expected[k])]
    if wrong:
        raise CheckpointError(f"{what} {path} has tensors of the wrong shape for its card's config: {wrong[:3]}; "
                              "the card was edited or belongs to other weights")


def load_tensors_and_card(path: str | Path, kind: str | None = None,
                          expected_shapes=None, expected_dtypes=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and card of checkpoint ``path``. ``expected_shapes``: a dict name → shape, or a callable
    card → dict; ``expected_dtypes``: a dict name → torch dtype (or a callable card → dict) whose kinds
    (floating-point, integer, boolean) the header's must match. Both are checked against the safetensors
    header, which is parsed (and the file's size checked against it) before the file is hashed, so a huge
    file is refused in milliseconds; no tensor is read before the hash matches."""
    card, wpath = read_card(path, kind)
    read_safetensors_header(wpath)
    if expected_shapes is not None:
        expected = expected_shapes(card) if callable(expected_shapes) else expected_shapes
        check_header_shapes(wpath, expected)
    if expected_dtypes is not None:
        check_header_dtypes(wpath, expected_dtypes(card) if callable(expected_dtypes) else expected_dtypes)
    try:
        digest = sha256_file(wpath)
    except OSError as e:
        raise CheckpointError(f"cannot read {wpath}: {e.strerror or e}") from None
    if digest != card.get("weights_sha256"):
        raise CheckpointError(f"weights file {wpath} does not match its card (SHA-256 {digest[:12]}… vs "
                              f"{str(card.get('weights_sha256'))[:12]}…): it is truncated, corrupted or from another checkpoint")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as e:
        raise CheckpointError(f"could not read {wpath} as safetensors: {e}") from None
    return tensors, card


MAX_DOWNLOAD_BYTES = 1 << 30  # what the app serves as a checkpoint download (ours are kB to tens of MB)


def read_checkpoint_bytes(path: str | Path, kind: str | None = None) -> tuple[bytes, bytes]:
    """(weights bytes, card bytes) of checkpoint ``path``, for serving a download: the weights file must be
    the one its card names, in the card's directory, and match the card's SHA-256 (``CheckpointError``
    otherwise); nothing else is ever read."""
    card, wpath = read_card(path, kind)
    read_safetensors_header(wpath)  # its size must be what its header says: a huge file is never read
    try:
        data = read_regular_file(wpath, MAX_DOWNLOAD_BYTES)
        card_bytes = read_regular_file(_paths(path)[1], _MAX_CARD_BYTES)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != card.get("weights_sha256"):
        raise CheckpointError(f"weights file {wpath} does not match its card (it is being rewritten, truncated "
                              "or from another checkpoint)")
    return data, card_bytes


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def __getattr__(name: str):
    """``from lsr1_core.checkpoints import load_model`` (the import documented before models moved to
    :mod:`lsr1_core.learned.io`) still works, with a ``DeprecationWarning``."""
    if name in ("load_model", "save_model", "model_card"):
        import warnings
        warnings.warn(f"lsr1_core.checkpoints.{name} moved to lsr1_core.learned.io.{name}; import it from "
                      "there (load_model and save_model also from lsr1_core.learned)",
                      DeprecationWarning, stacklevel=2)
        from .learned import io as _io
        return getattr(_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
