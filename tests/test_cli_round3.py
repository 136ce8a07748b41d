"""Issue 24 items 8 (generality CLI) and 19 (a 5 000-character checkpoint name): one message, exit 2, nothing run."""
from __future__ import annotations

import pytest

from lsr1_core.errors import CheckpointError
from experiments import generality
from lsr1_core.learned import LSR1Solver


def test_generality_refuses_an_out_that_is_a_file_before_running(tmp_path, capsys):
    f = tmp_path / "docs"
    f.write_text("not a directory")
    with pytest.raises(SystemExit) as e:
        generality.main(["--out", str(f), "--steps", "1", "--dims", "2"])
    assert e.value.code == 2 and "is a file" in capsys.readouterr().err


def test_generality_rebuild_refuses_a_directory_as_its_json(tmp_path, capsys):
    (tmp_path / "results" / "generality.json").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        generality.main(["--out", str(tmp_path), "--rebuild"])
    assert e.value.code == 2 and "in the way" in capsys.readouterr().err


def test_a_huge_checkpoint_name_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="too long"):
        LSR1Solver(checkpoint="a" * 5000)
