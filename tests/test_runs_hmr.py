"""HMR trainings as background runs (issue 16: HMR presets on the Meta-training page; issue 15: HMR training is a
problem of the core Trainer, not a copy of it)."""
import json

import pytest
import torch

from lsr1_core.errors import LSR1Error, UnknownNameError
from lsr1_core.hmr.models import load_hmr_model
from lsr1_core.hmr.presets import HMR_INITIALIZER, HMR_PRESETS, hmr_preset
from lsr1_core.hmr.train import HMRProblem, HMRTrainConfig
from lsr1_core.meta import Trainer
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.runs.catalog import available_models, hmr_models
from lsr1_core.runs.manager import preset_config, read_config


def tiny(name="hmr_lsr1", **kw):
    base = dict(iterations=2, batch=2, unroll=1, val_size=4, val_every=1, ckpt_every=1)
    base.update(kw)
    return hmr_preset(name, **base)


def test_hmr_presets_are_the_shipped_models_configs_on_the_shipped_initializer():
    shipped = {n: json.loads((HMR_INITIALIZER.parent / f"{n}.json").read_text())["train_config"]
               for n in ("hmr_lsr1", "hmr_lsr1_nosec", "hmr_lgd")}
    for name, tc in shipped.items():
        cfg = hmr_preset(name)
        assert isinstance(cfg, HMRTrainConfig) and cfg.stage == "update"
        assert cfg.initializer == str(HMR_INITIALIZER) and (HMR_INITIALIZER.parent / "hmr_lsr1.json").is_file()
        for key in ("method", "unroll", "secant_weight", "batch", "lr", "width", "lsr1", "val_every"):
            assert cfg.to_dict()[key] == tc[key], (name, key)
    assert hmr_preset("hmr_lsr1_qn").lsr1["form"] == "qn"
    assert set(HMR_PRESETS) >= {"hmr_lsr1", "hmr_lsr1_nosec", "hmr_lgd"}
    assert preset_config("hmr_lgd", {"iterations": 7}).iterations == 7
    assert preset_config("quadratic", {"iterations": 7}).task == "random_quadratic"
    with pytest.raises(UnknownNameError, match="hmr_lsr1"):
        hmr_preset("hmr_nope")
    with pytest.raises(LSR1Error, match="unroll"):
        hmr_preset("hmr_lsr1", unroll=0)


def test_a_run_directory_knows_its_kind(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(tiny().to_dict()))
    assert isinstance(read_config(d), HMRTrainConfig)
    (d / "config.json").write_text(json.dumps({"stage": "update", "method": "nope"}))
    with pytest.raises(LSR1Error, match="not a valid training config.*nope"):
        read_config(d)


@pytest.mark.slow
def test_runs_manager_trains_an_hmr_preset_like_the_trainer_and_resumes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LSR1_RUNS_ROOT", str(tmp_path / "jobs"))
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), preset_name="hmr_lsr1", run_id="h")
    info = mgr.wait(rid, timeout=600)
    assert info.state == "finished", (info.error, (tmp_path / "jobs" / "h" / "log.txt").read_text()[-2000:])
    assert info.kind == "hmr" and info.iteration == 2
    recs = read_metrics(info.path)
    assert [r["iteration"] for r in recs] == [0, 1, 2]
    assert all(r["val_loss"] == r["val_pa_mpjpe"] and 0 < r["val_pa_mpjpe"] < 1000 for r in recs)
    card = json.loads((info.path / "best.json").read_text())
    assert card["kind"] == "hmr" and card["train_config"]["initializer"] == str(HMR_INITIALIZER)
    # the same run in this process, through the same core Trainer: the same losses
    ref = Trainer(tiny(), tmp_path / "ref", problem=HMRProblem)
    ref.fit(progress=False)
    ref_recs = read_metrics(tmp_path / "ref")
    for a, b in zip(recs, ref_recs):
        assert a["iteration"] == b["iteration"]
        for key in ("meta_loss", "val_pa_mpjpe"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), (key, a, b)
    # the frozen initializer is the shipped one, unchanged by training
    init, _ = load_hmr_model(HMR_INITIALIZER)
    for k, v in init.initializer.state_dict().items():
        assert torch.equal(ref.net.initializer.state_dict()[k], v), k
    # listed as an HMR model (never as an L-SR1 one), resumable to more iterations
    assert any(e["path"] == str(info.path / "best") for e in hmr_models().values())
    assert "run: h" not in available_models()
    assert mgr.resume(rid, iterations=3) in ("running", "queued", "finished")
    info = mgr.wait(rid, timeout=600)
    assert info.state == "finished" and info.iteration == 3
    assert [r["iteration"] for r in read_metrics(info.path)] == [0, 1, 2, 3]
