"""Issue 22's bad input: a card whose model holds zero output layers is said to be untrained, whatever it records."""
from __future__ import annotations

from lsr1_core.checkpoints import PRETRAINED_DIR
from lsr1_core.pretrained import learned_status, list_pretrained, main


def test_zero_heads_are_said_plainly_and_trained_cards_say_where(capsys):
    s = learned_status("qn_quadratic")
    assert s.startswith("untrained: both output layers are zero") and "60 meta-iterations" in s
    # archived (not shipped: it ties its untrained start and fails the teaching check), still readable
    assert learned_status("qn_profile_rosenbrock", PRETRAINED_DIR / "archive").startswith(
        "trained: best at meta-iteration 280")
    assert "qn_profile_rosenbrock" not in list_pretrained()
    assert learned_status("quadratic").startswith("trained")  # the paper form's card (best at 3 400)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("qn_quadratic "))
    assert "untrained" in line

    for name in ("qn_logistic", "qn_least_squares", "qn_softmax", "qn_hmr_scalars"):
        line = next(l for l in out.splitlines() if l.startswith(name + " "))
        assert "trained scalars on" in line and "zero output layers" in line, line


def test_every_shipped_qn_card_beats_its_untrained_start_or_says_it_is_untrained():
    """Issue 22's shipping rule, as the cards record it: a qn card either holds zero output layers (and says it is
    untrained) or records a held-out comparison in which it beats its untrained start."""
    for name, card in list_pretrained().items():
        if card["config"].get("form") != "qn":
            continue
        s = learned_status(name)
        if s.startswith("untrained"):
            continue
        assert card.get("beats_untrained") is True, name
        m = card["heldout"]["mean_over_budgets"]["trained_vs_untrained"]
        assert m["hi"] < 0, (name, m)
