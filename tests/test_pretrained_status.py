"""Issue 22's bad input: a card whose model holds zero output layers is said to be untrained, whatever it records."""
from __future__ import annotations

from lsr1_core.pretrained import learned_status, main


def test_zero_heads_are_said_plainly_and_trained_cards_say_where(capsys):
    s = learned_status("qn_quadratic")
    assert s.startswith("untrained: both output layers are zero") and "60 meta-iterations" in s
    assert learned_status("qn_profile_rosenbrock").startswith("trained: best at meta-iteration 280")
    assert learned_status("quadratic").startswith("trained")  # the paper form's card (best at 3 400)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("qn_quadratic "))
    assert "untrained" in line
