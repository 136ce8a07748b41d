"""Trajectories: animated paths of several solvers on a 2-D function."""
from __future__ import annotations

import json
from dataclasses import replace

import streamlit as st

from explorer.player import trajectory_player
from explorer.state import all_specs, cached_run, sidebar
from lsr1_core.errors import LSR1Error
from lsr1_core.objectives import TEACHING_FUNCTIONS, teaching_function
from lsr1_core.viz.plots import objective_figure, player_figures, trajectory_figure


# κ on a log scale: equal slider steps multiply κ by about 1.5
KAPPAS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 500.0,
          700.0, 1000.0)


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
    default = [l for l in specs if l.startswith("L-SR1")][:1] + ["SR1 (classical)", "L-BFGS", "Adam",
                                                                  "Gradient descent", "Newton"]
    chosen = c.multiselect("Solvers", list(specs), default=[d for d in default if d in specs], key=f"{prefix}solvers")
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


def compute(fn, fn_kwargs, start, specs, steps, memory):
    if memory < 1:
        raise LSR1Error("the buffer size L must be at least 1")
    if not specs:
        raise LSR1Error("choose at least one solver")
    return cached_run(fn, tuple(sorted(fn_kwargs.items())), tuple(start), tuple(specs), steps, memory)


def show(result, fn, fn_kwargs, key: str, side_by_side: bool = True):
    for lab, err in result.errors.items():
        st.error(f"{lab}: {err}")
    T = max((t.steps for t in result.traces.values()), default=0)
    if T:
        player(result, fn, fn_kwargs, key, stacked=not side_by_side)
    notes = [f"**{lab}**: {tr.reason[0]}" for lab, tr in result.traces.items() if tr.reason[0]]
    if notes:
        st.warning("Diverged — shown up to its last finite point:\n\n" + "\n\n".join(notes))


def player(result, fn, fn_kwargs, key: str, stacked: bool):
    """The run in the trajectory player: its step slider and ▶ play move the paths, the current points and the
    objective plot's step line together in the browser (no rerun of this script). A click on the contour comes
    back as the component's value, which ``apply_click`` turns into the new start on the next run."""
    obj = teaching_function(fn, **fn_kwargs)
    figs = player_figures(obj, result.traces, result.f_star, obj.bounds)
    st.caption("Drag the step slider or press ▶ play: every plot follows the step. "
               "Click the contour to start every solver from that point; drag to zoom, double-click to reset.")
    try:
        trajectory_player(figs, key=f"{key}_player", stacked=stacked)
    except OSError as e:  # the component's files could not be written: static charts, rerun per step
        st.caption(f"(The step player is unavailable here: {e}.)")
        st.plotly_chart(trajectory_figure(obj, result.traces, obj.bounds, animate=True), key=f"{key}_traj")
        st.plotly_chart(objective_figure(result.traces, result.f_star, figs["T"]), key=f"{key}_obj")


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


def records_csv(result) -> str:
    import csv
    import io
    rows = [r for tr in result.traces.values() for r in tr.to_records()]
    first = ["solver", "step", "x0", "x1", "f", "diverged"]
    fields = sorted({k for r in rows for k in r}, key=lambda k: first.index(k) if k in first else 99)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def records_json(result) -> str:
    return json.dumps([r for tr in result.traces.values() for r in tr.to_records()])


def figure_html(result, fn, fn_kwargs) -> str:
    obj = teaching_function(fn, **fn_kwargs)
    T = max((t.steps for t in result.traces.values()), default=0)
    return trajectory_figure(obj, result.traces, obj.bounds, step=T, animate=True).to_html(include_plotlyjs=True,
                                                                                          auto_play=False)


def exports(result, fn, fn_kwargs, key):
    # Callables: the files are built when a button is pressed, not on every rerun (the HTML alone is 0.07 s).
    c1, c2, c3 = st.columns(3)
    c1.download_button("Trajectories (CSV)", lambda: records_csv(result), "trajectories.csv", "text/csv",
                       key=f"{key}_csv", on_click="ignore")
    c2.download_button("Trajectories (JSON)", lambda: records_json(result), "trajectories.json", "application/json",
                       key=f"{key}_json", on_click="ignore")
    c3.download_button("Figure (HTML)", lambda: figure_html(result, fn, fn_kwargs), "trajectories.html",
                       "text/html", key=f"{key}_html", on_click="ignore")


def render():
    ctx = sidebar()
    st.title("Trajectories")
    st.caption("Each solver starts from the same point. L-SR1 models come from the sidebar; "
               "learning rates of the classical solvers are set per function and editable.")
    compare = st.toggle("Compare two settings side by side", key="tr_compare")
    if not compare:
        with st.sidebar:
            st.header("Problem")
            args = settings("tr_", ctx["models"], player_key="main")
        try:
            result = compute(*args)
        except LSR1Error as e:
            st.error(str(e))
            return
        show(result, args[0], args[1], "main")
        st.session_state["last_run_args"] = args
        exports(result, args[0], args[1], "main")
    else:
        left, right = st.columns(2)
        for col, prefix in ((left, "A_"), (right, "B_")):
            with col:
                st.subheader("Setting " + prefix[0])
                args = settings(prefix, ctx["models"], player_key=prefix)
                try:
                    result = compute(*args)
                except LSR1Error as e:
                    st.error(str(e))
                    continue
                show(result, args[0], args[1], prefix, side_by_side=False)


if __name__ == "__main__":  # run as a page; importing it (for its widgets) renders nothing
    render()
