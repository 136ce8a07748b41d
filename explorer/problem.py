"""The problem a 2-D page runs: the sidebar's function, start, solvers, steps and buffer size (shared by the
Trajectories and Curvature & secant pages), and the cached run."""
from __future__ import annotations

from dataclasses import astuple, replace

import streamlit as st

from explorer.state import all_specs, cached_run
from lsr1_core.errors import LSR1Error
from lsr1_core.objectives import TEACHING_FUNCTIONS, teaching_function

# κ on a log scale: equal slider steps multiply κ by about 1.5
KAPPAS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 500.0,
          700.0, 1000.0)


def sync_lsr1_choice(key: str, seen_key: str, specs) -> None:
    """Keep a page's solver choice in step with the sidebar: an L-SR1 entry that appeared since the last run
    (a qn variant just ticked in the sidebar) is chosen when its model is; entries that are gone (a model or
    variant removed in the sidebar) are dropped before the widget is drawn."""
    lsr1_now = [l for l in specs if l.startswith("L-SR1")]
    if key in st.session_state:
        cur = [l for l in st.session_state[key] if l in specs]
        seen = st.session_state.get(seen_key, lsr1_now)
        cur += [l for l in lsr1_now if l not in seen and l not in cur and any(l.startswith(c + " (") for c in cur)]
        if cur != list(st.session_state[key]):
            st.session_state[key] = cur
    st.session_state[seen_key] = lsr1_now


def settings(prefix: str, models: dict, column=None, default_fn: str = "rosenbrock", default_steps: int = 100,
             player_key: str | None = None):
    """The setting's widgets; ``player_key``: the key of the player that draws this setting, whose last
    contour click (if new) becomes the start."""
    c = column or st
    names = list(TEACHING_FUNCTIONS)
    fn = c.selectbox("Function", names, index=names.index(default_fn), key=f"{prefix}fn")
    fn_kwargs = {}
    if fn == "quadratic":
        fn_kwargs["cond"] = float(c.select_slider("condition number κ (log scale)", KAPPAS, value=10.0,
                                                  key=f"{prefix}cond"))
        fn_kwargs["angle"] = float(c.slider("rotation (degrees)", 0.0, 180.0, 30.0, key=f"{prefix}angle"))
    obj = teaching_function(fn, **fn_kwargs)
    reset_start_on_new_function(prefix, fn, obj.default_start)
    if player_key is not None:
        apply_click(prefix, player_key, obj.bounds)
    a, b = c.columns(2)
    start = (a.number_input("start x₁", step=0.1, format="%.3f", key=f"{prefix}sx"),
             b.number_input("start x₂", step=0.1, format="%.3f", key=f"{prefix}sy"))
    specs = all_specs(fn, models)
    first = next((l for l in specs if l.startswith("L-SR1")), None)  # the first model, with its qn variants
    default = [l for l in specs if first and (l == first or l.startswith(first + " ("))] + [
        "SR1 (classical)", "L-BFGS", "Adam", "Gradient descent", "Newton"]
    key = f"{prefix}solvers"
    sync_lsr1_choice(key, f"{prefix}lsr1_seen", specs)
    chosen = c.multiselect("Solvers", list(specs), default=None if key in st.session_state else
                           [d for d in default if d in specs], key=key)
    steps = int(c.slider("steps", 5, 500, default_steps, key=f"{prefix}steps"))
    memory = int(c.number_input("buffer size L (L-SR1, SR1, L-BFGS)", min_value=0, max_value=64, value=8,
                                key=f"{prefix}mem"))
    with c.expander("learning rates"):
        final = []
        for lab in chosen:
            spec = specs[lab]
            kw = dict(spec.kwargs)
            if "lr" in kw:
                kw["lr"] = float(st.number_input(f"{lab} lr", min_value=1e-6, value=float(kw["lr"]), format="%.4g",
                                                 key=f"{prefix}lr_{lab}"))
            final.append(replace(spec, kwargs=tuple(sorted(kw.items()))))
    return fn, fn_kwargs, start, final, steps, memory


def reset_start_on_new_function(prefix: str, fn: str, default_start) -> None:
    """Each function starts from its own default start: set when the page first shows and whenever the
    function changes (a start kept from the previous function often lies outside the new one's range)."""
    seen = f"{prefix}fn_seen"
    if st.session_state.get(seen) != fn or f"{prefix}sx" not in st.session_state:
        st.session_state[seen] = fn
        st.session_state[f"{prefix}sx"] = float(default_start[0])
        st.session_state[f"{prefix}sy"] = float(default_start[1])


# The settings this process has run (by ``compute``), so that a page knows whether a run will be quick (the
# result is in ``cached_run``'s cache; rarely it was evicted since, which only costs the run).
_COMPUTED: set[str] = set()


def _setting_key(fn, fn_kwargs, start, specs, steps, memory) -> str:
    return repr((fn, sorted(fn_kwargs.items()), tuple(float(v) for v in start), [astuple(s) for s in specs], steps,
                 memory))


def computed(fn, fn_kwargs, start, specs, steps, memory) -> bool:
    """Whether this process has already run this setting (``compute`` then returns at once)."""
    return _setting_key(fn, fn_kwargs, start, specs, steps, memory) in _COMPUTED


def compute(fn, fn_kwargs, start, specs, steps, memory):
    if memory < 1:
        raise LSR1Error("the buffer size L must be at least 1")
    if not specs:
        raise LSR1Error("choose at least one solver")
    result = cached_run(fn, tuple(sorted(fn_kwargs.items())), tuple(start), tuple(specs), steps, memory)
    if len(_COMPUTED) > 1024:
        _COMPUTED.clear()
    _COMPUTED.add(_setting_key(fn, fn_kwargs, start, specs, steps, memory))
    return result


def apply_click(prefix: str, key: str, bounds) -> None:
    """Make the player's last clicked point (if new) the start of setting ``prefix``; called before the
    start inputs are created, which is when Streamlit lets a widget's value be set."""
    v = st.session_state.get(f"{key}_player")
    if not isinstance(v, dict) or v.get("n") == st.session_state.get(f"{key}_click_seen"):
        return
    st.session_state[f"{key}_click_seen"] = v.get("n")
    try:
        x, y = float(v["x"]), float(v["y"])
    except (KeyError, TypeError, ValueError):
        return
    (x0, x1), (y0, y1) = bounds
    st.session_state[f"{prefix}sx"] = round(min(max(x, x0), x1), 3)
    st.session_state[f"{prefix}sy"] = round(min(max(y, y0), y1), 3)


