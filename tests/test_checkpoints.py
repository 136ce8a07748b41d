import json

import pytest
import torch

from lsr1_core.learned.io import load_model, save_model
from lsr1_core.errors import CheckpointError
from lsr1_core.learned import LSR1Config, LSR1Net


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = LSR1Net(LSR1Config(hidden=16, memory=3))
    save_model(tmp_path / "m", net, preset="quadratic", iterations=5, metrics={"val_loss": -1.0})
    return net, tmp_path / "m"


def test_round_trip(saved):
    net, path = saved
    net2, card = load_model(path)
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(a, b), k
    assert card["preset"] == "quadratic" and card["iterations"] == 5
    assert card["config"]["memory"] == 3 and card["library_version"]
    assert card["num_parameters"] == net.num_parameters()


def test_truncated_weights_are_refused(saved):
    _, path = saved
    w = path.with_name("m.safetensors")
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(path)


def test_foreign_and_corrupt_cards_are_refused(saved, tmp_path):
    _, path = saved
    card_path = path.with_name("m.json")
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "format": "something-else"}))
    with pytest.raises(CheckpointError, match="not an L-SR1 Explorer model card"):
        load_model(path)
    card_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(path)
    with pytest.raises(CheckpointError, match="no model card"):
        load_model(tmp_path / "missing")


def test_card_that_does_not_fit_the_weights_is_refused(saved):
    _, path = saved
    card_path = path.with_name("m.json")
    card = json.loads(card_path.read_text())
    card["config"]["hidden"] = 32
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model(path)
    card["config"]["hidden"] = 16
    card["config"]["features"] = ["x", "g"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model(path)


def test_pickle_file_is_never_loaded(tmp_path):
    # a pickle disguised as weights: refused by the hash check / safetensors parser, never unpickled
    import pickle
    bad = tmp_path / "evil"
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "evil.json").write_text(json.dumps({"format": "lsr1-explorer-checkpoint", "kind": "lsr1",
                                                   "weights_sha256": "0" * 64, "config": {}}))
    with pytest.raises(CheckpointError):
        load_model(bad)
