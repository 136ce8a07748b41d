"""Issue 25, part 4: the runs manager knows no problem (lsr1_core.meta.registry) and launches through a backend.

- runs/manager.py (and every module of lsr1_core/runs except the model catalog) imports no problem module;
- config.json records the run's problem kind; an old one without it is inferred (HMR: it has ``stage``);
- an unknown kind, an unknown backend or a damaged backend entry in status.json is a clear error, never a
  traceback or a launch;
- the SLURM backend without submitit or without the SLURM commands says so (CLI, library and page).
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lsr1_core.errors import LSR1Error
from lsr1_core.meta import preset, registry
from lsr1_core.meta.presets import TrainConfig
from lsr1_core.runs import RunManager
from lsr1_core.runs.__main__ import main as runs_main
from lsr1_core.runs.backends import LocalBackend, SlurmBackend, backend_of, make_backend
from lsr1_core.runs.manager import preset_config, read_config

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "explorer" / "views" / "training.py")
# the problems and the training code: the manager reaches them only through lsr1_core.meta.registry
PROBLEM_MODULES = ("lsr1_core.hmr", "lsr1_core.train", "lsr1_core.meta.train", "lsr1_core.meta.presets",
                   "lsr1_core.meta.tasks", "lsr1_core.objectives", "lsr1_core.learned")


def tiny(iterations=3, **kw):
    base = dict(iterations=iterations, val_every=10, ckpt_every=5, batch=8, unroll=2, model={"hidden": 8})
    base.update(kw)
    return preset("quadratic", **base)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), inside functions too."""
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("name", ["manager.py", "backends.py", "files.py", "tensorboard.py", "__main__.py",
                                  "__init__.py"])
def test_the_runs_manager_imports_no_problem_module(name):
    imported = _imports(ROOT / "lsr1_core" / "runs" / name)
    if name == "__main__.py":  # the command line shares `--set KEY=VALUE`'s parser with python -m lsr1_core.train
        imported -= {"lsr1_core.train", "lsr1_core.train.parse_overrides"}
    bad = sorted(m for m in imported for p in PROBLEM_MODULES if m == p or m.startswith(p + "."))
    assert not bad, bad


def test_config_json_records_the_kind_and_reads_back(tmp_path):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="k", launch=False)
    d = json.loads((mgr.root / rid / "config.json").read_text())
    assert d["problem"] == "lsr1"
    assert read_config(mgr.root / rid) == tiny()
    assert mgr.info(rid).kind == "lsr1" and mgr.info(rid).backend == "local"


def test_old_config_json_without_a_kind_is_inferred(tmp_path):
    """Run directories written before kinds were recorded still load (lsr1_core.meta.registry.kind_of_dict)."""
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(tiny().to_dict()))
    assert read_config(run) == tiny()
    assert registry.kind_of_dict(tiny().to_dict()) == "lsr1"
    assert registry.kind_of_dict({"stage": "update", "method": "lgd"}) == "hmr"
    assert registry.kind_of_dict({"problem": "lsr1", "stage": "x"}) == "lsr1"  # a recorded kind wins


def test_an_unknown_kind_is_named(tmp_path):
    run = tmp_path / "x"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"problem": "chess", **tiny().to_dict()}))
    with pytest.raises(LSR1Error, match="unknown problem kind 'chess'"):
        read_config(run)
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    assert RunManager(tmp_path).info("x").kind == "lsr1"  # listings never fail on it


def test_presets_of_every_kind_and_unknown_names():
    assert isinstance(preset_config("quadratic", {"iterations": 5}), TrainConfig)
    assert registry.preset_kind("quadratic").kind == "lsr1"
    with pytest.raises(LSR1Error, match="unknown preset 'nope'"):
        preset_config("nope")
    with pytest.raises(LSR1Error, match="start\\(\\) needs a validated"):
        RunManager("unused").start({"iterations": 3})


def test_a_kind_or_preset_is_registered_once():
    lsr1 = registry.get("lsr1")
    assert registry.register(lsr1) is lsr1  # the same registration again is harmless
    with pytest.raises(LSR1Error, match="already"):
        registry.register({**lsr1.__dict__, "kind": "other"})


def test_backends_by_name():
    assert isinstance(make_backend(None), LocalBackend) and isinstance(make_backend("local"), LocalBackend)
    assert backend_of({}).name == "local"
    s = backend_of({"backend": "slurm", "backend_options": {"partition": "gpu", "time_min": 30}})
    assert isinstance(s, SlurmBackend) and s.options()["partition"] == "gpu" and s.time_min == 30
    with pytest.raises(LSR1Error, match="unknown backend 'k8s'"):
        make_backend("k8s")
    with pytest.raises(LSR1Error, match="takes no options"):
        make_backend("local", {"x": 1})


@pytest.mark.parametrize("status", [{"backend": "k8s"}, {"backend": "slurm", "backend_options": [1]},
                                    {"backend": "slurm", "backend_options": {"time_min": "1h"}}])
def test_a_damaged_backend_entry_fails_the_run_without_launching(tmp_path, status):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="d", launch=False)
    st_path = mgr.root / rid / "status.json"
    st_path.write_text(json.dumps({**json.loads(st_path.read_text()), **status}))
    assert mgr.schedule() == []
    info = mgr.info(rid)
    assert info.state == "failed" and "could not start the job process" in info.error, info
    assert not (mgr.root / rid / "log.txt").exists()


def test_launch_only_leaves_other_backends_queued(tmp_path):
    mgr = RunManager(tmp_path / "jobs", launch_only="slurm")
    rid = mgr.start(tiny(), run_id="l")  # a local run: a SLURM worker's schedule() never starts it
    assert mgr.info(rid).state == "queued"


def _no_slurm_commands(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_slurm_without_its_commands_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    _no_slurm_commands(monkeypatch, tmp_path)
    with pytest.raises(LSR1Error, match="SLURM commands"):
        RunManager(tmp_path / "jobs", backend="slurm").start(tiny(), run_id="s")
    assert not (tmp_path / "jobs" / "s").exists()  # nothing was created


def test_slurm_without_submitit_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit → ImportError
    with pytest.raises(LSR1Error, match="pip install submitit"):
        RunManager(tmp_path / "jobs", backend="slurm").start(tiny(), run_id="s")


def test_cli_backend_slurm_without_a_cluster_exits_2_with_the_reason(tmp_path, monkeypatch, capsys):
    _no_slurm_commands(monkeypatch, tmp_path)
    code = runs_main(["--root", str(tmp_path / "jobs"), "start", "--preset", "quadratic", "--backend", "slurm"])
    assert code == 2
    err = capsys.readouterr().err
    assert "SLURM" in err and "Traceback" not in err


def test_resume_onto_another_backend_is_checked_first(tmp_path, monkeypatch):
    mgr = RunManager(tmp_path / "jobs")
    rid = mgr.start(tiny(), run_id="r", launch=False)
    mgr.cancel(rid)
    _no_slurm_commands(monkeypatch, tmp_path)
    with pytest.raises(LSR1Error, match="SLURM"):
        mgr.resume(rid, backend="slurm")
    assert mgr.info(rid).state == "cancelled"


def test_the_page_launches_onto_the_chosen_backend_or_says_why_not(tmp_path, monkeypatch):
    monkeypatch.setenv("LSR1_RUNS_ROOT", str(tmp_path / "jobs"))
    monkeypatch.setenv("LSR1_REFRESH_S", "3600")
    _no_slurm_commands(monkeypatch, tmp_path)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert at.selectbox(key="train_backend").value == "local"
    at.selectbox(key="train_backend").set_value("slurm")
    at.text_input(key="train_name").set_value("on_slurm")
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert any("Not launched" in e.value and "SLURM" in e.value for e in at.error), [e.value for e in at.error]
    assert not (tmp_path / "jobs" / "on_slurm").exists()


# --- hostile backend entries (hypothesis) -------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as hst  # noqa: E402

_values = hst.recursive(hst.none() | hst.booleans() | hst.integers(-2**70, 2**70) | hst.floats() |
                        hst.text(max_size=8) | hst.sampled_from(["local", "slurm", "12", "lsr1", "hmr"]),
                        lambda c: hst.lists(c, max_size=3) | hst.dictionaries(hst.text(max_size=8), c, max_size=3),
                        max_leaves=8)
_status = hst.fixed_dictionaries({"state": hst.sampled_from(["running", "queued", "finished", "cancelled"])},
                                 optional={k: _values for k in ("backend", "backend_options", "slurm_job_id", "pid",
                                                                "pid_start", "cancel_requested")})


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(_status, _values)
def test_hostile_backend_and_kind_entries_give_an_answer_or_an_lsr1error(tmp_path_factory, status, kind):
    """Whatever status.json says of its backend and config.json of its kind: backend_of gives a backend or an
    LSR1Error; info, list, show and cancel never raise anything else; no worker is ever started."""
    import os
    root = tmp_path_factory.mktemp("hostile")
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = str(root)  # no squeue/scancel/sbatch: nothing outside this test is asked or signalled
    try:
        mgr = RunManager(root)
        rid = mgr.start(tiny(), run_id="h", launch=False)
        cfg = json.loads((root / rid / "config.json").read_text())
        (root / rid / "config.json").write_text(json.dumps({**cfg, "problem": kind}))
        (root / rid / "status.json").write_text(json.dumps(status))
        try:
            b = backend_of(status)
            assert b.name in ("local", "slurm")
        except LSR1Error:
            pass
        info = mgr.info(rid)
        assert info.kind in registry.kinds() and info.backend in ("local", "slurm")
        assert [r.run_id for r in mgr.list()] == ["h"]
        assert runs_main(["--root", str(root), "show", "h"]) == 0
        try:
            read_config(root / rid)
        except LSR1Error:
            pass
        try:
            mgr.cancel(rid)
        except LSR1Error:
            pass
        assert not (root / rid / "log.txt").exists()
    finally:
        os.environ["PATH"] = old_path
