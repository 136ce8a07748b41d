"""Did learning pay? A checkpoint against its own untrained start and L-BFGS, at equal evaluations, on held-out
problems of its family (issue 22, part 6).

Used by ``python -m lsr1_core.pretrained compare NAME``, by the scalar cards' shipping rule and by the
Meta-training page. Held-out draws use the family's held-out seeds (:func:`lsr1_core.meta.scalars.seeds_of`),
which no training or validation run uses.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import LSR1Error
from ..learned.rules import rule_for
from .families import FAMILIES, SPLITS


def load_card_model(path):
    """(net in float64, card) of a checkpoint stem or file (``…/NAME``, ``…/NAME.json``; resolve a shipped name with
    :func:`lsr1_core.pretrained.pretrained_path` first)."""
    from ..learned.io import load_model

    p = Path(str(path))
    net, card = load_model(p.with_suffix("") if p.suffix in (".json", ".safetensors") else p)
    return net.double(), card


def compare_card(name_or_path, family: str | None = None, n_seeds: int = 4, seeds=None) -> dict:
    """Held-out comparison of a checkpoint (see the module docstring). ``family`` defaults to the one the card was
    trained on; asking for another family is allowed but said plainly in the result's ``note`` (it is then a
    transfer test, not a held-out test of the model's own family)."""
    from . import scalars

    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or not 1 <= n_seeds <= 100:
        raise LSR1Error(f"the number of held-out seeds must be an integer in [1, 100], got {n_seeds!r}")
    net, card = load_card_model(name_or_path)
    if not rule_for(net.config).scale_free:
        raise LSR1Error(f"{name_or_path} is a {rule_for(net.config).name!r}-form model; the held-out comparison at equal "
                        "evaluations is defined for the qn form (the paper form has no evaluation-counted safeguard)")
    own = scalars.family_of(card)
    if family is None:
        if own is None:
            raise LSR1Error(f"the card of {name_or_path} does not record the family it was trained on; choose one of "
                            f"{list(FAMILIES)}")
        family = own
    fam = scalars.check_family(family)
    note = None
    if own is None:
        note = f"the card of {name_or_path} does not record a family: {family} is a family you chose"
    elif own != family and family not in SPLITS.get(own, ()):
        note = (f"{name_or_path} was trained on {own}, not on {family}: this is a transfer test, not a held-out "
                "test of its own family")
    untrained = scalars.untrained_start(net, card)
    h = scalars.heldout(fam, net, untrained, seeds=seeds, n_seeds=n_seeds)
    h.update(name=str(name_or_path), trained_on=own, note=note,
             learned_status=describe(net, card))
    return h


def describe(net, card: dict) -> str:
    """What a checkpoint actually learned, said plainly (issue 22): a qn model whose output layers are exactly zero
    runs no learned weights at all (classical SR1 with the qn form's rules), whatever its card says; a scalar card
    names its learned values; a card whose best checkpoint is iteration 0 ships its untrained start."""
    from ..learned.qn import heads_are_zero

    best = card.get("best_at_iteration")
    ts = card.get("trained_scalars")
    scale_free = rule_for(net.config).scale_free
    if isinstance(ts, dict) and scale_free:
        vals = ts.get("values") if isinstance(ts.get("values"), dict) else {}
        what = ", ".join(f"{k} = {v:.4g}" for k, v in vals.items() if isinstance(v, (int, float)))
        nets = "the networks are untrained (zero output layers)" if heads_are_zero(net) else "its networks hold weights"
        if best == 0:
            return f"untrained start: scalar meta-training kept iteration 0 ({nets})"
        return f"trained scalars on {ts.get('family')}: {what} (ES, best at iteration {best}); {nets}"
    if scale_free and heads_are_zero(net):
        claim = f" (its card records {card.get('iterations_run')} meta-iterations run)" if card.get(
            "iterations_run") else ""
        return f"untrained: both output layers are zero, so no learned weight takes part{claim}"
    if best == 0:
        return "untrained start: the best checkpoint by validation was iteration 0"
    return f"trained: best at meta-iteration {best}"


def _ci(c: dict) -> str:
    return f"{c['mean']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}]"


def format_comparison(h: dict) -> str:
    """A Markdown table of a held-out comparison: per budget, mean log10 gap (95 % interval) of the model, its
    untrained start and L-BFGS, and the paired differences."""
    lines = []
    head = f"Held-out comparison on {h['family']}: {h['problems']} problems (seeds {h['seeds']})"
    if h.get("name"):
        head = f"{h['name']} — " + head
    lines.append(head)
    if h.get("learned_status"):
        lines.append(f"What is learned: {h['learned_status']}")
    if h.get("note"):
        lines.append(f"NOTE: {h['note']}")
    lines.append("")
    lines.append("| evaluations | model | untrained start | L-BFGS | model − untrained | model − L-BFGS |")
    lines.append("|---|---|---|---|---|---|")
    for r in h["rows"] + [dict(h["mean_over_budgets"], budget="mean")]:
        lines.append(f"| {r['budget']} | {_ci(r['trained'])} | {_ci(r['untrained'])} | {_ci(r['lbfgs'])} | "
                     f"{_ci(r['trained_vs_untrained'])} | {_ci(r['trained_vs_lbfgs'])} |")
    lines.append("")
    lines.append("Cells: mean normalised log10 gap log10((f − f*)/(f₀ − f*)) of the best iterate within the budget "
                 "(lower is better), every evaluation (function + gradient) counted per problem; differences are "
                 "paired per problem.")
    return "\n".join(lines)
