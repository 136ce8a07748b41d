"""Build, once per machine, what makes the Human mesh recovery page's first visit slow: the Anny body
model's own cache (``~/.cache/anny``, or ``$ANNY_CACHE_DIR``; about two minutes on 2 cores the first time,
two seconds afterwards). ``scripts/setup.sh`` runs it; it returns at once when the cache is there.

    python -m lsr1_core.hmr.prepare          # build what is missing
    python -m lsr1_core.hmr.prepare --check  # exit status 1 when something is missing
"""
from __future__ import annotations

import argparse
import sys
import time

# the anny builders whose results anny caches (one safetensors file each; see anny.models.model_data)
ANNY_CACHED = ("load_data_", "build_model_data_", "build_compact_model_data_")
FIRST_BUILD_S = 120  # the first construction of the Anny model measured on 2 shared cores


def anny_cache_ready() -> bool:
    """True when anny's cache holds a built model (the first AnnyBody() then takes seconds, not minutes)."""
    try:
        from anny.models.model_data import CURRENT_DATA_VERSION
        from anny.paths import get_anny_cache_path
    except ImportError:
        return False
    folder = get_anny_cache_path() / f"v{CURRENT_DATA_VERSION}"
    names = [p.name for p in folder.glob("*.safetensors")] if folder.is_dir() else []
    return all(any(n.startswith(prefix) for n in names) for prefix in ANNY_CACHED)


def prepare(verbose: bool = True) -> float:
    """Build anny's cache if it is missing (by constructing the body model once); returns the seconds spent."""
    if anny_cache_ready():
        return 0.0
    from .anny_body import AnnyBody
    if verbose:
        print(f"[prepare] building the Anny body model's cache (once per machine, about {FIRST_BUILD_S} s "
              "on 2 cores)…", flush=True)
    t0 = time.perf_counter()
    AnnyBody()
    dt = time.perf_counter() - t0
    if verbose:
        print(f"[prepare] done in {dt:.0f} s", flush=True)
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lsr1_core.hmr.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report; exit status 1 when something is missing")
    a = ap.parse_args(argv)
    if a.check:
        ok = anny_cache_ready()
        print("anny cache:", "ready" if ok else "missing")
        return 0 if ok else 1
    prepare()
    return 0


if __name__ == "__main__":
    sys.exit(main())
