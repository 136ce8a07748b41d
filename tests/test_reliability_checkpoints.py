"""Issue 14, items 4 and 8 and the checkpoint minors: cards are checked before anything is built or served.

Before the fix: a card edited to a huge ``hidden`` built the full model (≈ 40 s, 7 GB at 12000) before
failing with a raw RuntimeError; a string ``format_version`` or a directory as card gave a TypeError /
IsADirectoryError; the Meta-training page's download served whatever file ``weights_file`` named.
"""
import json
import os
import time
from pathlib import Path

import pytest
import torch

from lsr1_core import checkpoints
from lsr1_core.checkpoints import (load_tensors_and_card, read_checkpoint_bytes, read_safetensors_header)
from lsr1_core.learned.io import load_model, save_model
from lsr1_core.errors import CheckpointError
from lsr1_core.learned.model import LSR1Config, LSR1Net


@pytest.fixture
def ckpt(tmp_path):
    net = LSR1Net(LSR1Config(hidden=8, memory=4))
    save_model(tmp_path / "m", net)
    return tmp_path / "m"


def _edit_card(ckpt, **changes):
    p = ckpt.with_suffix(".json")
    card = json.loads(p.read_text())
    for k, v in changes.items():
        if k.startswith("config."):
            card["config"][k[len("config."):]] = v
        else:
            card[k] = v
    p.write_text(json.dumps(card))


def test_a_card_edited_to_a_huge_width_is_refused_before_any_model_is_built(ckpt, monkeypatch):
    built = []
    init = LSR1Net.__init__

    def spy(self, config=None):
        built.append(torch.empty(0).device.type)  # the default device the module is built on
        init(self, config)

    monkeypatch.setattr(LSR1Net, "__init__", spy)
    _edit_card(ckpt, **{"config.hidden": 12000})
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="wrong shape") as e:
        load_model(ckpt)
    assert time.perf_counter() - t0 < 5
    assert "12000" in str(e.value)
    assert built == ["meta"], f"a real model was built before the shape check: {built}"
    # the untouched card still loads
    _edit_card(ckpt, **{"config.hidden": 8})
    net, _ = load_model(ckpt)
    assert net.config.hidden == 8


def test_invalid_configs_in_cards_are_checkpoint_errors(ckpt):
    for bad in ([1], "x", {"hidden": "wide"}, {"hidden": -1}, {"nope": 1}, None):
        _edit_card(ckpt, config=bad)
        with pytest.raises(CheckpointError, match="config"):
            load_model(ckpt)


@pytest.mark.parametrize("version", ["1", "2", 1.5, None, [1], True, -1])
def test_a_non_integer_format_version_is_a_clear_error(ckpt, version):
    _edit_card(ckpt, format_version=version)
    with pytest.raises(CheckpointError, match="format_version"):
        load_tensors_and_card(ckpt)


def test_paths_that_are_directories_or_empty_are_refused(tmp_path, ckpt):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(CheckpointError, match="not a file"):
        load_model(tmp_path / "d")
    for p in ("", " ", ".", "..", tmp_path / "..", None, 3):
        with pytest.raises(CheckpointError):
            load_model(p)
    (ckpt.parent / "sub").mkdir()
    _edit_card(ckpt, weights_file="sub")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_model(ckpt)


@pytest.mark.parametrize("named", ["../m.safetensors", "/etc/passwd", "..", ".", "", 5, ["m.safetensors"],
                                   "a\\b", "x\x00y"])
def test_weights_file_must_be_a_bare_name_next_to_the_card(ckpt, named):
    _edit_card(ckpt, weights_file=named)
    with pytest.raises(CheckpointError):
        load_model(ckpt)
    with pytest.raises(CheckpointError):
        read_checkpoint_bytes(ckpt)


def test_links_out_of_the_directory_and_devices_are_never_read(ckpt, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("secret")
    try:
        os.symlink(outside, ckpt.parent / "leak")
        os.symlink("/dev/zero", ckpt.parent / "zero")
        for name, msg in (("leak", "outside"), ("zero", "not a regular file")):
            _edit_card(ckpt, weights_file=name)
            t0 = time.perf_counter()
            with pytest.raises(CheckpointError, match=msg):
                read_checkpoint_bytes(ckpt)
            assert time.perf_counter() - t0 < 5
    finally:
        outside.unlink()


def test_download_bytes_are_the_cards_own_weights(ckpt):
    data, card = read_checkpoint_bytes(ckpt, kind="lsr1")
    assert data == ckpt.with_suffix(".safetensors").read_bytes()
    assert json.loads(card)["weights_sha256"] == __import__("hashlib").sha256(data).hexdigest()
    # another file with a valid name in the same directory but different bytes is refused
    (ckpt.parent / "other.safetensors").write_bytes(b"x" * 100)
    _edit_card(ckpt, weights_file="other.safetensors")
    with pytest.raises(CheckpointError, match="safetensors header"):  # not even a safetensors file: not read
        read_checkpoint_bytes(ckpt)
    # a valid safetensors file (the same header) with other bytes: its hash is checked
    good = ckpt.with_suffix(".safetensors").read_bytes()
    (ckpt.parent / "other.safetensors").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="does not match"):
        read_checkpoint_bytes(ckpt)


def test_training_page_download_uses_the_checked_reader():
    src = (Path(__file__).resolve().parent.parent / "explorer" / "views" / "training.py").read_text()
    assert "read_checkpoint_bytes(" in src and 'card["weights_file"]' not in src


def test_safetensors_header_is_parsed_and_checked(ckpt, tmp_path):
    w = ckpt.with_suffix(".safetensors")
    header = read_safetensors_header(w)
    sd = LSR1Net(LSR1Config(hidden=8, memory=4)).state_dict()
    assert {k: s for k, (_, s) in header.items()} == {k: tuple(v.shape) for k, v in sd.items()}
    raw = w.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    for bad in (raw[:4], (10**12).to_bytes(8, "little") + raw[8:], raw[:8] + b"[" + raw[9:8 + n] + raw[8 + n:],
                raw[:8 + n]):  # short, huge length, not an object, data cut off
        (tmp_path / "bad.safetensors").write_bytes(bad)
        with pytest.raises(CheckpointError):
            read_safetensors_header(tmp_path / "bad.safetensors")
