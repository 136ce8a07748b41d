"""The one runs root: where meta-training runs live, for the Meta-training page, the model catalog and the CLI.

``LSR1_RUNS_ROOT`` overrides the default ``runs/jobs`` (relative to the working directory); it is read on each
call, so a test or a second app instance can point elsewhere without re-importing anything."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_RUNS_ROOT = "runs/jobs"
ENV_VAR = "LSR1_RUNS_ROOT"


def runs_root() -> Path:
    """The directory holding the runs: ``$LSR1_RUNS_ROOT`` if set (and not empty), else ``runs/jobs``."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_RUNS_ROOT)
