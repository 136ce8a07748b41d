"""Typed settings in the app (issue 25, part 5): one frozen, hashable ``Setting`` from the widgets to the run
cache (its key) and to ``run_2d``; the catalogues in ``explorer.catalog``; every session key built by
``explorer.state.keys``."""
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from explorer import catalog
from explorer.catalog import default_specs
from explorer.problem import compute, computed, make_setting
from explorer.state import cached_run, keys
from lsr1_core.errors import LSR1Error
from lsr1_core.viz.explore import Setting, SolverSpec, run_2d

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "explorer" / "app.py")


def _setting(**over) -> Setting:
    specs = default_specs("quadratic")
    fields = dict(function="quadratic", fn_kwargs={"cond": 10.0, "angle": 30.0}, start=(2.0, 1.5),
                  solvers=(specs["Newton"], specs["Gradient descent"]), steps=12, memory=8)
    fields.update(over)
    return Setting(**fields)


def test_a_setting_is_frozen_and_hashable():
    s = _setting()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 20
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.solvers[0].label = "other"
    assert {s: 1}[_setting()] == 1
    assert s.fn_kwargs == (("angle", 30.0), ("cond", 10.0)) and s.kwargs == {"angle": 30.0, "cond": 10.0}
    assert isinstance(s.solvers, tuple) and s.start == (2.0, 1.5)
    assert s.objective().bounds == __import__("lsr1_core.objectives", fromlist=["x"]).teaching_function(
        "quadratic", cond=10.0, angle=30.0).bounds


def test_equal_widgets_give_an_equal_setting_and_one_cache_entry(monkeypatch):
    import explorer.problem

    monkeypatch.setattr(explorer.problem, "_COMPUTED", set())
    specs = default_specs("quadratic")
    # the same widget values, the function's parameters read in another order and the solvers as a list
    a = make_setting("quadratic", {"cond": 10.0, "angle": 30.0}, (2.0, 1.5), [specs["Newton"]], 12, 8)
    b = make_setting("quadratic", {"angle": 30.0, "cond": 10.0}, [2.0, 1.5], (specs["Newton"],), 12, 8)
    assert a == b and hash(a) == hash(b)
    other = make_setting("quadratic", {"cond": 10.0, "angle": 30.0}, (2.0, 1.5), [specs["Newton"]], 13, 8)
    assert other != a
    lr = dataclasses.replace(specs["Newton"], kwargs=(("lr", 0.5),))
    assert make_setting("quadratic", {"cond": 10.0, "angle": 30.0}, (2.0, 1.5), [lr], 12, 8) != a
    # the run cache's key is the setting: an equal setting finds the same run, another one runs
    assert cached_run(a) is cached_run(b)
    assert cached_run(other) is not cached_run(a)
    assert not computed(a)
    compute(a)
    assert computed(b) and not computed(other)


BAD = [
    (dict(function=3), "function must be the name"),
    (dict(function="nope"), "unknown 2-D function 'nope'"),
    (dict(fn_kwargs={"cond": "ten"}), "(name, finite number) pairs"),
    (dict(fn_kwargs=5), "must be a mapping"),
    (dict(fn_kwargs=(("cond", 2.0), ("cond", 3.0))), "name one twice"),
    (dict(fn_kwargs={"bogus": 1.0}), "wrong parameters"),
    (dict(fn_kwargs={"cond": 0.5}), "condition number must be >= 1"),
    (dict(fn_kwargs={"cond": float("inf")}), "(name, finite number) pairs"),
    (dict(start=(1.0,)), "two numbers"),
    (dict(start="ab"), "two numbers"),
    (dict(start=(float("nan"), 0.0)), "finite numbers"),
    (dict(start=(50.0, 0.0)), "outside the plotted range"),
    (dict(solvers=[object()]), "list of SolverSpec"),
    (dict(solvers="Newton"), "list of SolverSpec"),
    (dict(solvers=(SolverSpec("x", "gd", (("lr", [1.0]),)),)), "hashable"),
    (dict(steps=0), "number of steps must be a positive integer"),
    (dict(steps=2.5), "number of steps must be a positive integer"),
    (dict(steps=True), "number of steps must be a positive integer"),
    (dict(memory=0), "buffer size must be a positive integer"),
    (dict(memory=1.5), "buffer size must be a positive integer"),
]


@pytest.mark.parametrize("over,message", BAD, ids=[m for _, m in BAD])
def test_bad_values_are_refused_with_a_clear_message(over, message):
    with pytest.raises(LSR1Error, match=re.escape(message)):
        _setting(**over)


def test_the_page_refuses_what_it_refused_before_in_the_same_order():
    specs = default_specs("quadratic")
    with pytest.raises(LSR1Error, match="the buffer size L must be at least 1"):
        make_setting("quadratic", {}, (50.0, 0.0), [], 12, 0)  # also no solver and outside: the buffer first
    with pytest.raises(LSR1Error, match="choose at least one solver"):
        make_setting("quadratic", {}, (50.0, 0.0), [], 12, 8)
    with pytest.raises(LSR1Error, match="outside the plotted range"):
        make_setting("quadratic", {}, (50.0, 0.0), [specs["Newton"]], 12, 8)
    with pytest.raises(LSR1Error, match="choose at least one solver"):
        compute(_setting(solvers=()))  # a setting may hold none (run_2d runs it); the page refuses it
    with pytest.raises(LSR1Error, match="compute takes a Setting"):
        compute(("quadratic", {}, (2.0, 1.5), [], 12, 8))


def test_run_2d_takes_a_setting_or_its_fields_and_gives_the_same_run():
    s = _setting()
    a = run_2d(s)
    b = run_2d("quadratic", {"cond": 10.0, "angle": 30.0}, (2.0, 1.5), [s.solvers[0], s.solvers[1]], 12, 8)
    assert list(a.traces) == list(b.traces) == ["Newton", "Gradient descent"]
    for lab in a.traces:
        np.testing.assert_array_equal(a.traces[lab].x.numpy(), b.traces[lab].x.numpy())
    assert a.start == (2.0, 1.5) and a.fn_kwargs == {"cond": 10.0, "angle": 30.0}
    with pytest.raises(TypeError, match="either one Setting"):
        run_2d(s, steps=3)
    with pytest.raises(LSR1Error, match="number of steps"):
        run_2d("quadratic", {}, (2.0, 1.5), [s.solvers[0]], 0, 8)


def test_widgets_to_setting_to_run_2d_round_trip():
    """The Trajectories page's widgets make the Setting the page runs; run_2d of that Setting draws what the
    page's player shows."""
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/trajectories.py").run()
    k = keys.problem("trajectories")
    at.multiselect(key=k.solvers).set_value(["Gradient descent", "Newton", "Adam"])
    at.slider(key=k.steps).set_value(15)
    at.selectbox(key=k.function).set_value("quadratic").run()
    at.number_input(key=k.lr("Adam")).set_value(0.3)
    at.number_input(key=k.start_x).set_value(-1.25)
    at.number_input(key=k.memory).set_value(5).run()
    assert not at.exception and not at.error
    s = at.session_state[keys.trajectories.last_setting]
    assert isinstance(s, Setting)
    assert s.function == "quadratic" and s.kwargs == {"cond": 10.0, "angle": 30.0}
    assert s.start == (-1.25, at.number_input(key=k.start_y).value) and s.steps == 15 and s.memory == 5
    assert [sp.label for sp in s.solvers] == ["Gradient descent", "Newton", "Adam"]
    # each solver's learning rate is its input's value (an input keeps its value when the function changes)
    lrs = {sp.label: dict(sp.kwargs)["lr"] for sp in s.solvers}
    assert lrs == {lab: at.number_input(key=k.lr(lab)).value for lab in lrs} and lrs["Adam"] == 0.3
    assert lrs["Newton"] == dict(catalog.CLASSICAL["Newton"][1])["lr"]
    # the solvers' other arguments come from the catalogue
    assert {sp.label: sp.name for sp in s.solvers} == {lab: catalog.CLASSICAL[lab][0] for lab in lrs}
    # the same setting made again from the same values is equal: the page's run is the cached one
    again = make_setting("quadratic", {"angle": 30.0, "cond": 10.0}, s.start, list(s.solvers), 15, 5)
    assert again == s and cached_run(again) is cached_run(s)
    # run_2d of the Setting gives what the page's player draws
    import json
    comps = [c for c in at.get("component_instance") if c.proto.component_name.endswith("trajectory_player")]
    drawn = {o["label"]: o["f"] for o in json.loads(comps[0].proto.json_args)["spec"]["solvers"]}
    res = run_2d(s)
    assert set(drawn) == set(res.traces)
    for lab, tr in res.traces.items():
        f = tr.f[:, 0].double().numpy()
        finite = [v for v in f if math.isfinite(v)]
        assert drawn[lab][:len(finite)] == pytest.approx(finite, rel=1e-6, abs=1e-12), lab


def test_keys_are_built_in_one_place_and_distinct():
    k = keys.problem("trajectories")
    assert (k.function, k.start_x, k.start_y, k.solvers, k.steps, k.memory, k.lr("Adam")) == (
        "tr_fn", "tr_sx", "tr_sy", "tr_solvers", "tr_steps", "tr_mem", "tr_lr_Adam")
    assert keys.problem("curvature").solvers == "cv_solvers" and keys.player("main").player == "main_player"
    assert keys.player("A").player == "A__player" and keys.problem("A").start_x == "A_sx"
    with pytest.raises(KeyError, match="no problem setting"):
        keys.problem("benchmarks")
    every = [keys.device, keys.seed, keys.models, keys.qn_variants, keys.step_scale]
    for group in (keys.trajectories, keys.curvature, keys.nd, keys.anatomy, keys.psd):
        every += [getattr(group, f.name) for f in dataclasses.fields(group)]
    for page in ("trajectories", "curvature", "A", "B"):
        p = keys.problem(page)
        every += [p.function, p.cond, p.angle, p.start_x, p.start_y, p.solvers, p.steps, p.memory, p.function_seen,
                  p.lsr1_seen, p.lr("Adam")]
    for name in ("main", "A", "B"):
        p = keys.player(name)
        every += [p.player, p.click_seen, p.shown, p.traj, p.obj, p.export("csv"), p.export("json"),
                  p.export("html")]
    assert len(every) == len(set(every)), sorted(k for k in every if every.count(k) > 1)


# the files of the 2-D pages: their session keys come from explorer.state.keys (the HMR, Meta-training and
# Benchmarks pages keep their own for now)
KEYED = ["explorer/problem.py", "explorer/lessons.py", "explorer/views/trajectories.py",
         "explorer/views/curvature.py", "explorer/views/home.py", "explorer/app.py"]


@pytest.mark.parametrize("path", KEYED)
def test_no_2d_page_writes_a_session_key_by_hand(path):
    src = (ROOT / path).read_text()
    assert not re.search(r"""\bkey\s*=\s*f?["']""", src), "a widget key written by hand"
    assert not re.search(r"""session_state(\.get|\.pop|\.setdefault)?\s*[\[(]\s*f?["']""", src), \
        "a session key written by hand"


def test_the_catalogues_live_in_the_explorer_not_in_the_figure_builders():
    from lsr1_core.viz import explore

    for name in ("CLASSICAL", "LR_DEFAULTS", "QN_VARIANTS", "default_specs", "lsr1_spec_variants", "importable"):
        assert not hasattr(explore, name), name
        assert hasattr(catalog, name), name
    assert catalog.default_choice(["L-SR1 m", "L-SR1 m (no BFGS fallback)", "L-SR1 n", "Adam", "Newton"]) == [
        "L-SR1 m", "L-SR1 m (no BFGS fallback)", "Adam", "Newton"]


_junk = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(max_size=5), st.lists(st.floats(-5, 5), max_size=3), st.dictionaries(st.text(max_size=4),
                                                                                                st.floats(), max_size=2))


def _mostly(valid, junk=_junk):
    """``valid`` 9 times in 10, else junk (hypothesis weighs the branches of one_of equally)."""
    return st.tuples(st.integers(0, 9), valid, junk).map(lambda t: t[1] if t[0] else t[2])


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(function=_mostly(st.sampled_from(["quadratic", "quadratic", "rosenbrock", "himmelblau", "nope"])),
       fn_kwargs=_mostly(st.one_of(
           st.just({}), st.fixed_dictionaries({"cond": st.floats(0.5, 1000), "angle": st.floats(0, 180)}),
           st.dictionaries(st.sampled_from(["cond", "angle", "a", "bogus"]),
                           st.one_of(st.floats(), st.integers(-5, 2000), st.text(max_size=3)), max_size=2))),
       start=_mostly(st.one_of(st.tuples(st.floats(-2, 2), st.floats(-1, 3)), st.tuples(st.floats(), st.floats()),
                               st.lists(st.floats(-3, 3), max_size=3))),
       solvers=_mostly(st.lists(st.sampled_from(["Newton", "Adam", "L-BFGS"]), max_size=3)),
       steps=_mostly(st.integers(-3, 600)), memory=_mostly(st.one_of(st.none(), st.integers(-3, 70))))
def test_any_values_make_a_setting_or_a_clear_refusal(function, fn_kwargs, start, solvers, steps, memory):
    """Whatever a page (or a caller) hands it, Setting either holds checked, hashable values or raises an
    LSR1Error; never another exception."""
    specs = default_specs("quadratic")
    if isinstance(solvers, list) and all(isinstance(s, str) and s in specs for s in solvers):
        solvers = [specs[s] for s in solvers]
    try:
        s = Setting(function, fn_kwargs, start, solvers, steps, memory)
    except LSR1Error as e:
        assert str(e)
        return
    assert hash(s) == hash(Setting(s.function, s.kwargs, list(s.start), list(s.solvers), s.steps, s.memory))
    assert all(math.isfinite(v) for v in s.start) and s.steps >= 1 and (s.memory is None or s.memory >= 1)
    (x0, x1), (y0, y1) = s.objective().bounds
    assert x0 <= s.start[0] <= x1 and y0 <= s.start[1] <= y1
