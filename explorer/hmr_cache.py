"""An on-disk cache of what the Human mesh recovery page computes before it can show anything: the shipped
test set and each sample's fits. ``scripts/setup.sh`` (through ``explorer.hmr_prepare``) fills it for the
page's default view, the page adds every sample it fits; a later process reads them in milliseconds.

Where: ``$LSR1_CACHE_DIR`` or ``~/.cache/lsr1_explorer``. Entries are keyed by everything they depend on: the
source they are computed by (``SOURCE_GLOBS``), the torch version, the checkpoint cards (which hold their weights'
SHA-256) and the parameters; a change of any of them makes a new key, and a stale entry is simply never read.
Files are safetensors (tensors) and npz without pickles plus JSON, written atomically (temporary file, fsync,
rename, fsync of the directory, so a crash never leaves an empty or half entry under its real name); an entry
that cannot be read (empty, truncated, not the format) is deleted, recorded in :data:`DAMAGED` for the page to
mention, and recomputed."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import lsr1_core
from lsr1_core.hmr.data import HMRBatch, test_set

LIB = Path(lsr1_core.__file__).resolve().parent  # the library's source
HERE = Path(__file__).resolve().parent            # explorer/


def cache_dir() -> Path:
    return Path(os.environ.get("LSR1_CACHE_DIR") or Path.home() / ".cache" / "lsr1_explorer")


# the code what is cached depends on (body model, data, fitting methods, learned and classical solvers, the
# renderer and the overlays' framing and colours), as globs under lsr1_core/, less the hmr modules that do not
# touch it, and the explorer modules that fill and read the cache; scripts/setup.sh hashes the same files to
# decide whether to run explorer.hmr_prepare again
SOURCE_GLOBS = ("checkpoints.py", "device.py", "operators.py", "trace.py", "hmr/*.py", "learned/*.py",
                "solvers/*.py", "objectives/*.py", "viz/hmr.py", "viz/palette.py")
NOT_SOURCES = ("hmr/formats.py", "hmr/smpl.py", "hmr/train.py")
EXPLORER_SOURCES = ("hmr_cache.py", "hmr_prepare.py")


@lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of the source a cached result depends on (``SOURCE_GLOBS``) and the torch version."""
    h = hashlib.blake2b(torch.__version__.encode(), digest_size=8)
    files = {f for g in SOURCE_GLOBS for f in LIB.glob(g)} - {LIB / n for n in NOT_SOURCES}
    for f in sorted(files) + [HERE / n for n in EXPLORER_SOURCES]:
        h.update(f"{f.parent.name}/{f.name}".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def key_of(**parts) -> str:
    """A file-name-safe digest of ``parts`` (JSON-able) and the code version."""
    text = json.dumps({"code": code_version(), **parts}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def card_digest(path: str | Path) -> str:
    """The digest of a checkpoint's card (it records its weights' SHA-256), or '' when it cannot be read."""
    try:
        return hashlib.blake2b(Path(path).with_suffix(".json").read_bytes(), digest_size=12).hexdigest()
    except OSError:
        return ""


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        tmp.unlink(missing_ok=True)


# (file name, reason) of each damaged entry found since the page last looked (it shows them and clears this)
DAMAGED: list[tuple[str, str]] = []
# what reading a damaged file can raise: an empty .npz is EOFError, an empty .safetensors SafetensorError
_READ_ERRORS = (OSError, EOFError, TypeError, ValueError, RuntimeError, KeyError, IndexError, SafetensorError,
                zipfile.BadZipFile)


def _damaged(path: Path, e: BaseException) -> None:
    """Record and delete an entry that exists but cannot be read; it is recomputed and written again."""
    if not path.exists():
        return  # a plain miss
    DAMAGED.append((path.name, f"{type(e).__name__}: {str(e)[:160]}" if str(e) else type(e).__name__))
    try:
        path.unlink()
    except OSError:
        pass


def load_batch(key: str) -> HMRBatch | None:
    path = cache_dir() / f"batch_{key}.safetensors"
    try:
        return HMRBatch(**load_file(str(path)))
    except _READ_ERRORS as e:
        _damaged(path, e)
        return None


def save_batch(key: str, batch: HMRBatch) -> None:
    try:
        _write_atomic(cache_dir() / f"batch_{key}.safetensors", lambda p: save_file(batch.tensors(), str(p)))
    except OSError:
        pass  # a cache that cannot be written only costs time


def load_fit(key: str) -> dict | None:
    """A fit of ``lsr1_core.hmr.compare.fit_methods`` (numpy arrays and plain values) saved by :func:`save_fit`,
    or None."""
    path = cache_dir() / f"fit_{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            fit = {k: meta[k] for k in meta}
            for group in ("poses", "shapes"):
                fit[group] = {n: z[f"{group}/{n}"] for n in meta["order"]}
            fit["metrics"] = {n: {m: z[f"metrics/{n}/{m}"] for m in meta["metric_names"]} for n in meta["order"]}
        del fit["metric_names"]
        return fit
    except _READ_ERRORS as e:
        _damaged(path, e)
        return None


def save_fit(key: str, fit: dict) -> None:
    arrays = {f"{g}/{n}": np.asarray(fit[g][n]) for g in ("poses", "shapes") for n in fit["order"]}
    names = sorted(next(iter(fit["metrics"].values()))) if fit["metrics"] else []
    arrays.update({f"metrics/{n}/{m}": np.asarray(fit["metrics"][n][m]) for n in fit["order"] for m in names})
    meta = {k: v for k, v in fit.items() if k not in ("poses", "shapes", "metrics")}
    meta["metric_names"] = names
    arrays["meta"] = np.array(json.dumps(meta, default=float))
    def write(path):
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    try:
        _write_atomic(cache_dir() / f"fit_{key}.npz", write)
    except (OSError, TypeError, ValueError):
        pass


def load_arrays(kind: str, key: str) -> dict[str, np.ndarray] | None:
    """Named arrays saved by :func:`save_arrays` (``kind`` names the sort of entry), or None."""
    path = cache_dir() / f"{kind}_{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except _READ_ERRORS as e:
        _damaged(path, e)
        return None


def save_arrays(kind: str, key: str, arrays: dict) -> None:
    def write(path):
        with open(path, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    try:
        _write_atomic(cache_dir() / f"{kind}_{key}.npz", write)
    except (OSError, TypeError, ValueError):
        pass


# --- what the page caches ------------------------------------------------------------------------------
def test_set_cached(body) -> HMRBatch:
    """The shipped test set (``data.test_set`` with its defaults) of the Anny body, from the cache when there.
    ``body``: the body model, or a function returning it (called only when the cache misses)."""
    key = key_of(what="test_set", body="anny")
    batch = load_batch(key)
    if batch is None:
        batch = test_set(body() if callable(body) and not isinstance(body, torch.nn.Module) else body)
        save_batch(key, batch)
    return batch


def fit_key(body: str, sample: tuple, checkpoints, classical, steps: int) -> str:
    """The key of one sample's fit: the body model's name, the sample's key (("test", i) or ("random", seed)),
    the checkpoints as (slot, path) pairs (their cards' digests count, not their paths), the classical
    methods and the number of steps."""
    ckpts = sorted((slot, card_digest(path)) for slot, path in checkpoints)
    return key_of(what="fit", body=body, sample=list(sample), ckpts=ckpts, classical=list(classical), steps=steps)
