"""Trajectories: animated paths of several solvers on a 2-D function."""
from __future__ import annotations

import json

import streamlit as st

from explorer.player import player_placeholder, trajectory_player
from explorer.problem import KAPPAS, apply_click, compute, computed, reset_start_on_new_function, settings  # noqa: F401
from explorer.state import sidebar
from lsr1_core.errors import LSR1Error
from lsr1_core.objectives import teaching_function
from lsr1_core.viz.plots import objective_figure, player_figures, trajectory_figure


PLAYER_CAPTION = ("Drag the step slider or press ▶ play: every plot follows the step. "
                  "Click the contour to start every solver from that point; drag to zoom, double-click to reset.")


def show(result, fn, fn_kwargs, key: str, side_by_side: bool = True, messages=None, slot=None):
    """The run's errors (in ``messages``), its player (in ``slot``) and divergence notes (containers: a slot
    made before the run keeps the player where a first run's placeholder drew it)."""
    with messages or st.container():
        for lab, err in result.errors.items():
            st.error(f"{lab}: {err}")
    T = max((t.steps for t in result.traces.values()), default=0)
    if T:
        with slot or st.container():
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
    st.caption(PLAYER_CAPTION)
    try:
        trajectory_player(figs, key=f"{key}_player", stacked=stacked)
    except OSError as e:  # the component's files could not be written: static charts, rerun per step
        st.caption(f"(The step player is unavailable here: {e}.)")
        st.plotly_chart(trajectory_figure(obj, result.traces, obj.bounds, animate=True), key=f"{key}_traj")
        st.plotly_chart(objective_figure(result.traces, result.f_star, figs["T"]), key=f"{key}_obj")


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


def early_player(slot, key: str, args) -> bool:
    """On the page's first run in a session whose setting has not been run yet: draw the player's frame
    (waiting) into ``slot`` before the solvers run, so that the browser loads its plotly.js meanwhile; the
    caller reruns the page once the run is cached. True when it drew the frame."""
    seen = f"{key}_player_seen"
    first = not st.session_state.get(seen)
    st.session_state[seen] = True
    if not first or computed(*args):
        return False
    with slot:
        st.caption(PLAYER_CAPTION)
        player_placeholder(f"{key}_player", "Running the solvers…")
    return True


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
        messages, slot = st.container(), st.container()
        early = early_player(slot, "main", args)
        try:
            result = compute(*args)
        except LSR1Error as e:
            if early:
                st.rerun()  # the next run shows the error without the waiting player
            st.error(str(e))
            return
        if early:
            st.rerun()  # the run is cached now: the next run draws it into the frame drawn above
        show(result, args[0], args[1], "main", messages=messages, slot=slot)
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
