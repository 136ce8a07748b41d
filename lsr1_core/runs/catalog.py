"""Every L-SR1 model a user can pick: shipped pretrained ones and the best checkpoints of finished runs."""
from __future__ import annotations

import json
from pathlib import Path

from ..pretrained import PRETRAINED_DIR


def available_models(runs_root: str | Path = "runs/jobs", pretrained_dir: str | Path | None = None) -> dict[str, Path]:
    """label → checkpoint path (without suffix). Pretrained first, then runs with a best checkpoint."""
    out: dict[str, Path] = {}
    pdir = Path(pretrained_dir or PRETRAINED_DIR)
    for card in sorted(pdir.glob("*.json")):
        try:
            if json.loads(card.read_text()).get("kind") == "lsr1":
                out[f"pretrained: {card.stem}"] = card.with_suffix("")
        except (OSError, json.JSONDecodeError):
            continue
    root = Path(runs_root)
    if root.exists():
        for run in sorted(root.iterdir()):
            best = run / "best.json"
            if best.exists():
                out[f"run: {run.name}"] = run / "best"
    return out
