"""Every L-SR1 model a user can pick: shipped pretrained ones and the best checkpoints of finished runs."""
from __future__ import annotations

import json
from pathlib import Path

from ..pretrained import PRETRAINED_DIR
from .root import runs_root as default_runs_root

# runs whose best checkpoint is not offered as a model: they stopped on an error or were stopped by hand
UNUSABLE_STATES = ("failed", "cancelled", "interrupted")


def _run_state(run: Path) -> str | None:
    try:
        return json.loads((run / "status.json").read_text()).get("state")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def available_models(runs_root: str | Path | None = None, pretrained_dir: str | Path | None = None) -> dict[str, Path]:
    """label → checkpoint path (without suffix). Pretrained first, then runs with a best checkpoint, from the
    one runs root (``lsr1_core.runs.root.runs_root()`` unless given); failed and cancelled runs are left out."""
    out: dict[str, Path] = {}
    pdir = Path(pretrained_dir or PRETRAINED_DIR)
    for card in sorted(pdir.glob("*.json")):
        try:
            if json.loads(card.read_text()).get("kind") == "lsr1":
                out[f"pretrained: {card.stem}"] = card.with_suffix("")
        except (OSError, json.JSONDecodeError):
            continue
    root = Path(runs_root) if runs_root is not None else default_runs_root()
    if root.exists():
        for run in sorted(root.iterdir()):
            best = run / "best.json"
            if best.exists() and _run_state(run) not in UNUSABLE_STATES:
                out[f"run: {run.name}"] = run / "best"
    return out
