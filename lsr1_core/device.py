"""Device and dtype selection: the GPU when present, the CPU otherwise."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when available; anything else is passed to torch."""
    if device is None or device == "auto":
        return default_device()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine; use 'cpu' or 'auto'")
    return dev


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float": torch.float32, "double": torch.float64}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype {dtype} is not supported; use torch.float32 or torch.float64")
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} is not supported; use 'float32' or 'float64'") from None


_THREADS = {"lock": threading.Lock(), "depth": 0, "before": None}


@contextmanager
def single_thread():
    """Run torch on one intra-op thread here. Small problems (2-D runs, one HMR sample's fit) are made of small
    operations, for which intra-op threads cost more than they give, and far more when other processes load
    the CPU: a 200-step L-SR1 run on the 2-D quadratic measured 0.3-0.5 s on one thread and 10-24 s on two
    (2 cores, another process busy). The setting is process-wide, so overlapping users (page runs, a
    prefetch thread) are counted: the first sets it, the last restores the previous count."""
    with _THREADS["lock"]:
        if _THREADS["depth"] == 0:
            _THREADS["before"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS["depth"] += 1
    try:
        yield
    finally:
        with _THREADS["lock"]:
            _THREADS["depth"] -= 1
            if _THREADS["depth"] == 0:
                torch.set_num_threads(_THREADS["before"])
