"""The problem a 2-D page runs: the sidebar's function, start, solvers, steps and buffer size (shared by the
Trajectories and Curvature & secant pages) made into one :class:`Setting`, and its cached run."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from explorer.catalog import KAPPAS, default_choice
from explorer.state import PlayerKeys, ProblemKeys, all_specs, cached_run
from lsr1_core.errors import LSR1Error
from lsr1_core.objectives import TEACHING_FUNCTIONS, teaching_function
from lsr1_core.viz.explore import Setting

__all__ = ["KAPPAS", "Setting", "apply_click", "compute", "computed", "make_setting", "settings"]


def sync_lsr1_choice(k: ProblemKeys, specs) -> None:
    """Keep a page's solver choice in step with the sidebar: an L-SR1 entry that appeared since the last run
    (a qn variant just ticked in the sidebar) is chosen when its model is; entries that are gone (a model or
    variant removed in the sidebar) are dropped before the widget is drawn."""
    key, seen_key = k.solvers, k.lsr1_seen
    lsr1_now = [l for l in specs if l.startswith("L-SR1")]
    if key in st.session_state:
        cur = [l for l in st.session_state[key] if l in specs]
        seen = st.session_state.get(seen_key, lsr1_now)
        cur += [l for l in lsr1_now if l not in seen and l not in cur and any(l.startswith(c + " (") for c in cur)]
        if cur != list(st.session_state[key]):
            st.session_state[key] = cur
    st.session_state[seen_key] = lsr1_now


def settings(k: ProblemKeys, models: dict, column=None, default_fn: str = "rosenbrock", default_steps: int = 100,
             player: PlayerKeys | None = None) -> Setting:
    """The setting's widgets (keys ``k``), made into a :class:`Setting`; raises an ``LSR1Error`` naming what is
    wrong after every widget is drawn. ``player``: the player that draws this setting, whose last contour click
    (if new) becomes the start."""
    c = column or st
    names = list(TEACHING_FUNCTIONS)
    fn = c.selectbox("Function", names, index=names.index(default_fn), key=k.function)
    fn_kwargs = {}
    if fn == "quadratic":
        fn_kwargs["cond"] = float(c.select_slider("condition number κ (log scale)", KAPPAS, value=10.0,
                                                  key=k.cond))
        fn_kwargs["angle"] = float(c.slider("rotation (degrees)", 0.0, 180.0, 30.0, key=k.angle))
    obj = teaching_function(fn, **fn_kwargs)
    reset_start_on_new_function(k, fn, obj.default_start)
    if player is not None:
        apply_click(k, player, obj.bounds)
    a, b = c.columns(2)
    start = (a.number_input("start x₁", step=0.1, format="%.3f", key=k.start_x),
             b.number_input("start x₂", step=0.1, format="%.3f", key=k.start_y))
    specs = all_specs(fn, models)
    sync_lsr1_choice(k, specs)
    chosen = c.multiselect("Solvers", list(specs), default=None if k.solvers in st.session_state else
                           default_choice(specs), key=k.solvers)
    steps = int(c.slider("steps", 5, 500, default_steps, key=k.steps))
    memory = int(c.number_input("buffer size L (L-SR1, SR1, L-BFGS)", min_value=0, max_value=64, value=8,
                                key=k.memory))
    with c.expander("learning rates"):
        final = []
        for lab in chosen:
            spec = specs[lab]
            kw = dict(spec.kwargs)
            if "lr" in kw:
                kw["lr"] = float(st.number_input(f"{lab} lr", min_value=1e-6, value=float(kw["lr"]), format="%.4g",
                                                 key=k.lr(lab)))
            final.append(replace(spec, kwargs=tuple(sorted(kw.items()))))
    return make_setting(fn, fn_kwargs, start, final, steps, memory)


def make_setting(function: str, fn_kwargs: dict, start, solvers, steps: int, memory: int) -> Setting:
    """The widgets' values as a :class:`Setting`, refused (``LSR1Error``) as a page refuses them: a buffer size
    under 1 and an empty choice of solvers first, then what ``Setting`` itself checks."""
    if memory < 1:
        raise LSR1Error("the buffer size L must be at least 1")
    if not solvers:
        raise LSR1Error("choose at least one solver")
    return Setting(function, fn_kwargs, tuple(start), tuple(solvers), steps, memory)


def reset_start_on_new_function(k: ProblemKeys, fn: str, default_start) -> None:
    """Each function starts from its own default start: set when the page first shows and whenever the
    function changes (a start kept from the previous function often lies outside the new one's range)."""
    if st.session_state.get(k.function_seen) != fn or k.start_x not in st.session_state:
        st.session_state[k.function_seen] = fn
        st.session_state[k.start_x] = float(default_start[0])
        st.session_state[k.start_y] = float(default_start[1])


# The settings this process has run (by ``compute``), so that a page knows whether a run will be quick (the
# result is in ``cached_run``'s cache; rarely it was evicted since, which only costs the run).
_COMPUTED: set[Setting] = set()


def computed(setting: Setting) -> bool:
    """Whether this process has already run this setting (``compute`` then returns at once)."""
    return setting in _COMPUTED


def compute(setting: Setting):
    """The setting's run, from the cache shared by every session (run first if it is not there)."""
    if not isinstance(setting, Setting):
        raise LSR1Error(f"compute takes a Setting, got {type(setting).__name__}")
    if not setting.solvers:
        raise LSR1Error("choose at least one solver")
    result = cached_run(setting)
    if len(_COMPUTED) > 1024:
        _COMPUTED.clear()
    _COMPUTED.add(setting)
    return result


def apply_click(k: ProblemKeys, player: PlayerKeys, bounds) -> None:
    """Make the player's last clicked point (if new) the start of the setting with keys ``k``; called before
    the start inputs are created, which is when Streamlit lets a widget's value be set."""
    v = st.session_state.get(player.player)
    if not isinstance(v, dict) or v.get("n") == st.session_state.get(player.click_seen):
        return
    st.session_state[player.click_seen] = v.get("n")
    try:
        x, y = float(v["x"]), float(v["y"])
    except (KeyError, TypeError, ValueError):
        return
    (x0, x1), (y0, y1) = bounds
    st.session_state[k.start_x] = round(min(max(x, x0), x1), 3)
    st.session_state[k.start_y] = round(min(max(y, y0), y1), 3)
