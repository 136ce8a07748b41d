"""The secant penalty of the meta-loss (Eq. 8 and its relative form), written once for every trainer."""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import LSR1Error

SECANT_FORMS = ("absolute", "relative")


def secant_penalty(secant: torch.Tensor, p: torch.Tensor | Sequence[torch.Tensor] | None = None,
                   form: str = "absolute", relative: torch.Tensor | None = None) -> torch.Tensor:
    """The per-problem penalty (B,) from the squared residuals ``secant`` = ‖p − B̃q‖² (B,).

    ``"absolute"``: ‖p − B̃q‖² as in Eq. 8. ``"relative"``: ‖p − B̃q‖²/‖p‖², which cannot be lowered by
    merely shortening the steps (docs/design.md); ``p`` is the step (B, N), or its blocks (e.g. HMR's pose
    and shape steps), whose squared norms are summed. ``relative`` gives an already computed relative
    residual instead (the qn form's departure mean(u²), equal to ‖p − Hq‖²/‖p‖² wherever the pair is used
    and without gradient through skipped pairs)."""
    if form == "absolute":
        return secant
    if form != "relative":
        raise LSR1Error(f"secant_form must be one of {list(SECANT_FORMS)}, got {form!r}")
    if relative is not None:
        return relative
    if p is None:
        raise LSR1Error("the relative secant penalty needs the step p")
    blocks = [p] if isinstance(p, torch.Tensor) else list(p)
    psq = (blocks[0] * blocks[0]).sum(-1)
    for b in blocks[1:]:
        psq = psq + (b * b).sum(-1)
    return secant / psq.clamp_min(1e-12)
