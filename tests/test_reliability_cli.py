"""Issue 14, minor list: command lines and listings answer bad input with a message, never a traceback or a
silent change. Each case failed before the fix (traceback, accepted silently, or wrote outside pretrained/)."""
import json
from pathlib import Path

import pytest

from lsr1_core.errors import LSR1Error
from lsr1_core.meta import Trainer, preset
from lsr1_core.runs.catalog import available_models
from lsr1_core.train import main as train_main
from lsr1_core.train import parse_overrides


def tiny(iterations=3):
    return preset("quadratic", iterations=iterations, val_every=10, ckpt_every=5, batch=8, unroll=2,
                  model={"hidden": 8})


@pytest.mark.parametrize("item, msg", [
    ("lr=abc", "lr must be a number"), ("lr=null", "lr must be a number"), ("lr=true", "lr must be a number"),
    ("betas=5", "betas must be a list"), ("betas=[0.9]", "betas must be a list"), ("model=3", "model.FIELD"),
    ("model.dropout=abc", "model.dropout must be a number"), ("model.lr_clamp=abc", "model.lr_clamp must be"),
    ("iterations=1.5", "iterations must be an integer"), ("detach_gradient=1", "true or false"),
    ("secant_form=3", "must be a string"), ("model.memory=true", "model.memory must be an integer"),
])
def test_wrong_type_set_values_are_named(item, msg, capsys, tmp_path):
    with pytest.raises(LSR1Error, match=msg):
        parse_overrides([item])
    assert train_main(["--preset", "quadratic", "--run-dir", str(tmp_path / "r"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_right_type_set_values_still_work():
    o = parse_overrides(["lr=0.001", "lr=1", "betas=[0.8, 0.9]", "model.lr_clamp=null", "model.lr_clamp=5",
                         "model.memory=4", "secant_form=absolute", "detach_gradient=true"])
    cfg = preset("quadratic", **o)
    assert cfg.lr == 1 and cfg.betas == (0.8, 0.9) and cfg.model.lr_clamp == 5 and cfg.model.memory == 4


def test_train_resume_refuses_other_flags_and_a_lower_iteration(tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(tiny(3), run).fit(progress=False)
    before = (run / "config.json").read_text()
    for extra in (["--preset", "quadratic"], ["--set", "lr=0.1"], ["--seed", "3"], ["--run-dir", "x"],
                  ["--iterations", "1"]):
        assert train_main(["--resume", str(run), "--no-progress", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
    assert (run / "config.json").read_text() == before


def test_pretrained_train_name_cannot_be_a_path(tmp_path, capsys, monkeypatch):
    from lsr1_core import pretrained
    monkeypatch.chdir(tmp_path)
    for name in ("../../x", "../x", "/tmp/x", "a/b", "", ".hidden", "x\n"):
        assert pretrained.main(["train", name, "--preset", "quadratic", "--iterations", "1"]) == 2, name
        assert "error:" in capsys.readouterr().err
        with pytest.raises(LSR1Error):
            pretrained.train_and_ship(name, tiny(1), out_dir=tmp_path / "out")
    assert not any(tmp_path.rglob("*.json"))


def test_non_object_json_files_never_break_model_listings(tmp_path):
    pdir = tmp_path / "pretrained"
    pdir.mkdir()
    (pdir / "list.json").write_text("[1, 2]")
    (pdir / "str.json").write_text('"x"')
    (pdir / "bin.json").write_bytes(b"\xff\xfe")
    (pdir / "ok.json").write_text(json.dumps({"kind": "lsr1"}))
    (pdir / "dir.json").mkdir()
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "best.json").write_text("{}")
    (runs / "r1" / "status.json").write_text("[]")
    (runs / "stray.txt").write_text("x")
    got = available_models(runs, pdir)
    assert got == {"pretrained: ok": pdir / "ok", "run: r1": runs / "r1" / "best"}
    from lsr1_core.pretrained import list_pretrained
    assert list(list_pretrained(pdir)) == ["ok"]
    hmr = tmp_path / "hmr"
    (hmr / "h").mkdir(parents=True)
    (hmr / "h" / "best.json").write_text(json.dumps({"kind": "hmr", "train_config": [1], "config": "x", "body": 3}))
    entries = available_models(hmr, pdir, kind="hmr")
    assert "run: h" in entries


@pytest.mark.parametrize("argv, msg", [
    (["--n-test", "0"], "--n-test"), (["--n-test", "-3"], "--n-test"), (["--steps", "0"], "--steps"),
    (["--steps", "2"], "--steps"), (["--threads", "-1"], "--threads"), (["--extra", "foo"], "NAME=RUN_DIR"),
    (["--extra", "x=/nonexistent"], "not a finished HMR run"), (["--extra", "lsr1=."], "already used"),
    (["--extra", "=x"], "NAME=RUN_DIR"), (["--out-dir", __file__], "--out-dir"),
])
def test_hmr_evaluate_cli_validates_before_loading(argv, msg, capsys):
    from experiments.hmr_evaluate import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
