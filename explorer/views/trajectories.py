"""Trajectories: animated paths of several solvers on a 2-D function."""
from __future__ import annotations

import json

import streamlit as st

from explorer.player import player_placeholder, trajectory_player
from explorer.problem import Setting, compute, computed, settings
from explorer.state import PlayerKeys, keys, sidebar
from lsr1_core.errors import LSR1Error
from lsr1_core.objectives import teaching_function
from lsr1_core.viz.plots import objective_figure, player_figures, trajectory_figure


PLAYER_CAPTION = ("Drag the step slider or press ▶ play: every plot follows the step. "
                  "Click the contour to start every solver from that point; drag to zoom, double-click to reset.")


def show(result, setting: Setting, pk: PlayerKeys, side_by_side: bool = True, messages=None, slot=None):
    """The run's errors (in ``messages``), its player (in ``slot``) and divergence notes (containers: a slot
    made before the run keeps the player where a first run's placeholder drew it)."""
    with messages or st.container():
        for lab, err in result.errors.items():
            st.error(f"{lab}: {err}")
    T = max((t.steps for t in result.traces.values()), default=0)
    if T:
        with slot or st.container():
            player(result, setting, pk, stacked=not side_by_side)
    notes = [f"**{lab}**: {tr.reason[0]}" for lab, tr in result.traces.items() if tr.reason[0]]
    if notes:
        st.warning("Diverged — shown up to its last finite point:\n\n" + "\n\n".join(notes))


def player(result, setting: Setting, pk: PlayerKeys, stacked: bool):
    """The run in the trajectory player: its step slider and ▶ play move the paths, the current points and the
    objective plot's step line together in the browser (no rerun of this script). A click on the contour comes
    back as the component's value, which ``apply_click`` turns into the new start on the next run."""
    obj = setting.objective()
    figs = player_figures(obj, result.traces, result.f_star, obj.bounds)
    st.caption(PLAYER_CAPTION)
    try:
        trajectory_player(figs, key=pk.player, stacked=stacked)
    except OSError as e:  # the component's files could not be written: static charts, rerun per step
        st.caption(f"(The step player is unavailable here: {e}.)")
        st.plotly_chart(trajectory_figure(obj, result.traces, obj.bounds, animate=True), key=pk.traj)
        st.plotly_chart(objective_figure(result.traces, result.f_star, figs["T"]), key=pk.obj)


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


def exports(result, setting: Setting, pk: PlayerKeys):
    # Callables: the files are built when a button is pressed, not on every rerun (the HTML alone is 0.07 s).
    c1, c2, c3 = st.columns(3)
    c1.download_button("Trajectories (CSV)", lambda: records_csv(result), "trajectories.csv", "text/csv",
                       key=pk.export("csv"), on_click="ignore")
    c2.download_button("Trajectories (JSON)", lambda: records_json(result), "trajectories.json", "application/json",
                       key=pk.export("json"), on_click="ignore")
    c3.download_button("Figure (HTML)", lambda: figure_html(result, setting.function, setting.kwargs),
                       "trajectories.html", "text/html", key=pk.export("html"), on_click="ignore")


def early_player(slot, pk: PlayerKeys, setting: Setting) -> bool:
    """On the page's first run in a session whose setting has not been run yet: draw the player's frame
    (waiting) into ``slot`` before the solvers run, so that the browser loads its plotly.js meanwhile; the
    caller reruns the page once the run is cached. True when it drew the frame."""
    first = not st.session_state.get(pk.shown)
    st.session_state[pk.shown] = True
    if not first or computed(setting):
        return False
    with slot:
        st.caption(PLAYER_CAPTION)
        player_placeholder(pk.player, "Running the solvers…")
    return True


def render():
    ctx = sidebar()
    st.title("Trajectories")
    st.caption("Each solver starts from the same point. L-SR1 models come from the sidebar; "
               "learning rates of the classical solvers are set per function and editable.")
    compare = st.toggle("Compare two settings side by side", key=keys.trajectories.compare)
    if not compare:
        pk = keys.player("main")
        with st.sidebar:
            st.header("Problem")
            try:
                setting = settings(keys.problem("trajectories"), ctx["models"], player=pk)
            except LSR1Error as e:
                setting, error = None, e
        if setting is None:
            st.session_state[pk.shown] = True  # as when the frame went out first: a later fix runs without it
            st.error(str(error))
            return
        messages, slot = st.container(), st.container()
        early = early_player(slot, pk, setting)
        try:
            result = compute(setting)
        except LSR1Error as e:
            if early:
                st.rerun()  # the next run shows the error without the waiting player
            st.error(str(e))
            return
        if early:
            st.rerun()  # the run is cached now: the next run draws it into the frame drawn above
        show(result, setting, pk, messages=messages, slot=slot)
        st.session_state[keys.trajectories.last_setting] = setting
        exports(result, setting, pk)
    else:
        left, right = st.columns(2)
        for col, side in ((left, "A"), (right, "B")):
            with col:
                st.subheader("Setting " + side)
                pk = keys.player(side)
                try:
                    setting = settings(keys.problem(side), ctx["models"], player=pk)
                    result = compute(setting)
                except LSR1Error as e:
                    st.error(str(e))
                    continue
                show(result, setting, pk, side_by_side=False)


if __name__ == "__main__":  # run as a page; importing it (for its widgets) renders nothing
    render()
