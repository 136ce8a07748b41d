"""Every model a user can pick: shipped pretrained ones and the best checkpoints of finished runs.

``available_models()`` lists L-SR1 models (``kind="lsr1"``, meta-training runs under the runs root);
``available_models(kind="hmr")`` lists human-mesh-recovery checkpoints (``pretrained/hmr_*`` and HMR training
runs, see :func:`hmr_checkpoint`)."""
from __future__ import annotations

import os
from pathlib import Path

from ..checkpoints import PRETRAINED_DIR
from ..hmr import PRETRAINED_HMR
from .manager import read_json
from .root import runs_root as default_runs_root

# runs whose best checkpoint is not offered as a model: they stopped on an error or were stopped by hand
UNUSABLE_STATES = ("failed", "cancelled", "interrupted")


def _run_state(run: Path) -> str | None:
    st = read_json(run / "status.json")
    return st.get("state") if st is not None else None


FORM_NAMES = {"paper": "paper form", "qn": "scale-free"}


def model_form(path: str | Path) -> str:
    """The L-SR1 form ("paper" or "qn") a checkpoint's card names; "paper" for cards from before forms
    existed, "unknown" for a card that cannot be read (the loader then says what is wrong)."""
    card = read_json(Path(str(path) + ".json"))
    if card is None:
        return "unknown"
    cfg = card.get("config")
    form = cfg.get("form", "paper") if isinstance(cfg, dict) else "unknown"
    return form if form in FORM_NAMES else "unknown"


def available_models(runs_root: str | Path | None = None, pretrained_dir: str | Path | None = None,
                     kind: str = "lsr1") -> dict[str, Path]:
    """label → checkpoint path (without suffix). Pretrained first, then runs with a best checkpoint, from the
    one runs root (``lsr1_core.runs.root.runs_root()`` unless given); failed and cancelled runs are left out.
    ``kind="hmr"``: HMR checkpoints instead (``runs_root``: one folder or several, see :func:`hmr_models`)."""
    if kind == "hmr":
        return {label: Path(e["path"]) for label, e in hmr_models(runs_root, pretrained_dir).items()}
    if kind != "lsr1":
        raise ValueError(f"unknown model kind {kind!r}; choose 'lsr1' or 'hmr'")
    out: dict[str, Path] = {}
    pdir = Path(pretrained_dir or PRETRAINED_DIR)
    for card in sorted(pdir.glob("*.json")):
        d = read_json(card)  # a non-object or broken JSON file is skipped, never a traceback
        if d is not None and d.get("kind") == "lsr1":
            out[f"pretrained: {card.stem}"] = card.with_suffix("")
    root = Path(runs_root) if runs_root is not None else default_runs_root()
    if root.exists():
        for run in sorted(root.iterdir()):
            best = run / "best.json"
            if run.is_dir() and best.is_file() and _run_state(run) not in UNUSABLE_STATES and \
                    (read_json(best) or {}).get("kind") != "hmr":  # HMR runs share the root
                out[f"run: {run.name}"] = run / "best"
    return out


# --- human mesh recovery -------------------------------------------------------------------------
def hmr_checkpoint(card_path: str | Path, label: str, slot: str | None = None) -> dict | None:
    """What the HMR page needs to know about one checkpoint card, or None when it is not a usable HMR update
    model (unreadable card, another kind, an initializer-stage run). ``slot``: the method slot it fills
    (lsr1, lgd, lsr1_nosec), derived from the card unless given; ``unroll``: its training horizon K."""
    card_path = Path(card_path)
    card = read_json(card_path)  # a regular file only, bounded: a FIFO named best.json never blocks the page
    try:
        mtime = card_path.stat().st_mtime_ns
    except OSError:
        return None
    if card is None or card.get("kind") != "hmr":
        return None
    tc = card.get("train_config") if isinstance(card.get("train_config"), dict) else {}
    if tc.get("stage") == "initializer":
        return None  # an initializer run: its update modules are untrained
    method = card["config"].get("method") if isinstance(card.get("config"), dict) else None
    try:
        nosec = float(tc.get("secant_weight", 1.0) or 0.0) == 0.0
    except (TypeError, ValueError):
        nosec = False
    slot = slot or ("lgd" if method == "lgd" else "lsr1_nosec" if nosec else "lsr1")
    return {"label": label, "path": str(card_path.with_suffix("")), "method": method, "slot": slot,
            "iterations": card.get("iterations"), "unroll": tc.get("unroll"),
            "body": card["body"].get("body_model") if isinstance(card.get("body"), dict) else None, "mtime": mtime}


def hmr_models(runs_roots=None, pretrained_dir: str | Path | None = None) -> dict[str, dict]:
    """label → :func:`hmr_checkpoint` entry: the shipped HMR checkpoints first ("shipped: hmr_lsr1"), then the
    best checkpoints of HMR training runs ("run: NAME"). ``runs_roots``: a folder, a list of folders or an
    ``os.pathsep``-separated string (default: ``$LSR1_HMR_RUNS``, else ``runs/`` and the runs root, where the
    Meta-training page's HMR runs live); a folder holding ``best.json`` is itself a run, any other folder is
    searched one level down. Failed, cancelled and interrupted runs are left out."""
    if runs_roots is None:
        runs_roots = os.environ.get("LSR1_HMR_RUNS") or ["runs", str(default_runs_root())]
    if isinstance(runs_roots, (str, Path)):
        runs_roots = [p for p in str(runs_roots).split(os.pathsep) if p]
    pdir = Path(pretrained_dir or PRETRAINED_DIR)
    out: dict[str, dict] = {}
    for slot, stem in PRETRAINED_HMR.items():
        e = hmr_checkpoint(pdir / f"{stem}.json", f"shipped: {stem}", slot)
        if e:
            out[e["label"]] = e
    for root in map(Path, runs_roots):
        if (root / "best.json").exists():
            runs = [root]
        else:
            runs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for run in runs:
            if _run_state(run) in UNUSABLE_STATES:
                continue
            label = f"run: {run.name}" if f"run: {run.name}" not in out else f"run: {run}"
            e = hmr_checkpoint(run / "best.json", label)
            if e:
                out[label] = e
    return out
