"""Saving and loading L-SR1 models as checkpoints (safetensors + JSON card).

:mod:`lsr1_core.checkpoints` knows tensors and cards only; building a model from a card lives here, next to
the model, so that the library's import graph has no cycle (checkpoints never imports learned).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..checkpoints import git_commit, load_tensors_and_card, now_iso, save_tensors_and_card
from ..errors import CheckpointError
from .model import LSR1Config, LSR1Net


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
        "date": now_iso(),
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
    if len(str(path)) > 4096 or any(len(part) > 255 for part in Path(str(path)).parts):
        raise CheckpointError(f"checkpoint path {str(path)[:60]!r}… is too long ({len(str(path))} characters, or a "
                              "name over 255): give the path of a checkpoint's .safetensors or its stem")
    holder = {}

    def expected_shapes(card: dict) -> dict:
        # The card's config, validated, and the shapes of the model it describes, built on the meta
        # device (no memory, no time) so that a card edited to a huge width is refused before anything
        # is allocated.
        try:
            holder["config"] = config = LSR1Config.from_dict(card["config"])
            with torch.device("meta"):
                sd = LSR1Net(config).state_dict()
            shapes = {k: tuple(v.shape) for k, v in sd.items()}
            holder["dtypes"] = {k: v.dtype for k, v in sd.items()}
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RuntimeError) as e:
            raise CheckpointError(f"model card of {path} has an invalid config: {type(e).__name__}: {e}") from None
        return shapes

    # the header's dtypes must be of the model's kinds (floats for weights): an I64 header over float data
    # with a recomputed hash would load as weights around 1e18
    tensors, card = load_tensors_and_card(path, kind="lsr1", expected_shapes=expected_shapes,
                                          expected_dtypes=lambda card: holder["dtypes"])
    net = LSR1Net(holder["config"])
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
