"""The trajectory player: a small custom component that scrubs every step of a 2-D run in the browser.

Streamlit sends the run once (the contour-and-paths figure, the objective figure and each solver's path);
the player's step slider and play button then move every linked plot with one ``Plotly.restyle`` of the
changed scatter traces per plot, without a round trip to the server. A click on the contour
sends its coordinates back, and the Trajectories page makes that point the new start.
"""
from __future__ import annotations

import hashlib
import importlib
import json

from explorer.component_files import STREAMLIT_PROTOCOL_JS, plain_figure
from explorer.components.files import component_dir

TRAJ_HEIGHT = 580
BAR_HEIGHT = 46

_HTML = r"""<!doctype html>
<html><head><meta charset="utf-8">
<style>
html,body{margin:0;padding:0;background:transparent;overflow:hidden;color:#31333F;
  font-family:"Source Sans Pro","Source Sans 3",sans-serif;font-size:15px}
#bar{display:flex;align-items:center;gap:12px;height:%(bar)dpx;padding:0 6px;box-sizing:border-box}
#play{min-width:5.5em;padding:4px 10px;border:1px solid rgba(49,51,63,.25);border-radius:8px;background:#fff;
  color:inherit;font:inherit;cursor:pointer} #play:hover{border-color:#ff4b4b;color:#ff4b4b}
#step{flex:1;-webkit-appearance:none;appearance:none;height:6px;border-radius:3px;background:#e4e5eb;outline:none}
#step::-webkit-slider-thumb{-webkit-appearance:none;width:16px;height:16px;border-radius:50%%;background:#ff4b4b;
  border:none;cursor:pointer} #step:focus::-webkit-slider-thumb{box-shadow:0 0 0 3px rgba(255,75,75,.3)}
#step::-moz-range-thumb{width:16px;height:16px;border-radius:50%%;background:#ff4b4b;border:none} #label{min-width:8.5em;font-variant-numeric:tabular-nums;text-align:right}
#plots{display:flex;gap:8px} #plots.stacked{flex-direction:column}
#traj{flex:3 1 0;min-width:0} #obj{flex:2 1 0;min-width:0}
#traj.clickable .nsewdrag{cursor:crosshair !important}
#wait{display:none;padding:40px 12px;color:rgba(49,51,63,.6)} body.waiting #wait{display:block}
body.waiting #bar,body.waiting #plots{visibility:hidden}
</style>
<script src="./plotly.min.js"></script>
<script>window.__plotlyReady = performance.now();</script></head>
<body>
<div id="bar"><button id="play" title="play / pause (space)">▶ play</button>
<input id="step" type="range" min="0" max="0" value="0" aria-label="step">
<span id="label"></span></div>
<div id="wait"></div>
<div id="plots"><div id="traj"></div><div id="obj"></div></div>
<script>
(function () {
%(protocol)s
  var tj = document.getElementById("traj"), ob = document.getElementById("obj"), plots = document.getElementById("plots"),
      slider = document.getElementById("step"), label = document.getElementById("label"),
      play = document.getElementById("play");
  var S = null, T = 0, cur = 0, timer = null, clickTimer = null;
  // read by the browser tests and the benchmark: what is drawn, and how long the last step update took
  window.__trajView = {renders: 0, rev: null, step: null, updates: 0, ms: null, error: null};
  var config = {displaylogo: false, responsive: true, doubleClick: "reset"};

  function setStep(s) {
    s = Math.max(0, Math.min(T, s | 0));
    cur = s; slider.value = s; label.textContent = "step " + s + " / " + T;
    var t0 = performance.now(), d1 = [], i1 = [], d2 = [], i2 = [];
    S.solvers.forEach(function (o) {
      var n = o.x.length, k = Math.min(s, n - 1);
      if (n > 0) {
        d1.push({x: o.x.slice(0, k + 1), y: o.y.slice(0, k + 1)}); i1.push(o.line);
        d1.push({x: [o.x[k]], y: [o.y[k]], marker: {symbol: (o.div >= 0 && s >= o.div) ? "x" : "circle"}});
        i1.push(o.marker);
      }
      var m = o.f.length, j = Math.min(s, m - 1);
      d2.push(m > 0 ? {x: [j], y: [o.f[j]]} : {x: [], y: []}); i2.push(o.omarker);
    });
    d2.push({x: [s, s], y: ob.data[S.vline].y}); i2.push(S.vline);
    return Promise.all([update(tj, d1, i1), update(ob, d2, i2)]).then(function () {
      window.__trajView.ms = performance.now() - t0;
      window.__trajView.step = s;
      window.__trajView.updates += 1;
    });
  }
  // One Plotly.restyle per plot with the changed traces' x, y (and marker symbols). Not Plotly.animate: with
  // redraw off it removes the contour layer of the subplot it animates (plotly.js 4).
  function update(gd, data, idx) {
    var u = {x: data.map(function (d) { return d.x; }), y: data.map(function (d) { return d.y; })};
    if (data.some(function (d) { return d.marker; }))
      u["marker.symbol"] = data.map(function (d, i) { return d.marker ? d.marker.symbol : ((gd.data[idx[i]].marker || {}).symbol || "circle"); });
    return Plotly.restyle(gd, u, idx);
  }
  function stop() { if (timer) { clearInterval(timer); timer = null; } play.textContent = "▶ play"; }
  function start() {
    if (cur >= T) setStep(0);
    play.textContent = "❚❚ pause";
    var every = Math.max(25, Math.min(150, 5000 / Math.max(T, 1)));
    timer = setInterval(function () { if (cur >= T) { stop(); return; } setStep(cur + 1); }, every);
  }
  play.addEventListener("click", function () { if (timer) stop(); else start(); });
  slider.addEventListener("input", function () { stop(); setStep(+slider.value); });
  document.addEventListener("keydown", function (e) {
    if (e.key === " " && e.target !== play) { e.preventDefault(); if (timer) stop(); else start(); }
  });

  // A click on the plotting area (not a drag, not a double click) sends its coordinates to the page.
  tj.addEventListener("click", function (ev) {
    if (!S || !S.click || !tj._fullLayout) return;
    var r = tj.querySelector(".nsewdrag");
    if (!r) return;
    var bb = r.getBoundingClientRect();
    if (ev.clientX < bb.left || ev.clientX > bb.right || ev.clientY < bb.top || ev.clientY > bb.bottom) return;
    var xa = tj._fullLayout.xaxis, ya = tj._fullLayout.yaxis;
    var pt = {x: xa.p2l(ev.clientX - bb.left), y: ya.p2l(ev.clientY - bb.top), n: Date.now() + Math.random()};
    if (clickTimer) { clearTimeout(clickTimer); clickTimer = null; return; }  // a double click resets zoom
    clickTimer = setTimeout(function () { clickTimer = null; window.__trajView.clicked = pt; setValue(pt); }, 280);
  });

  function draw(spec) {
    document.body.className = "";
    var wasAtEnd = S === null || cur >= T;
    S = spec;
    plots.className = spec.stacked ? "stacked" : "";
    tj.className = spec.click ? "clickable" : "";
    var t = spec.traj, o = spec.obj;
    t.layout.autosize = true; o.layout.autosize = true;
    return Promise.all([Plotly.react(tj, t.data, t.layout, config), Plotly.react(ob, o.data, o.layout, config)])
      .then(function () {
        T = spec.T; slider.max = T; window.__trajView.S = spec;
        return setStep(wasAtEnd ? T : Math.min(cur, T));
      }).then(function () {
        window.__trajView.renders += 1;
        window.__trajView.rev = spec.rev;
        setHeight(document.body.scrollHeight);
      });
  }
  window.addEventListener("message", function (ev) {
    var d = ev.data;
    if (!d || d.type !== "streamlit:render") return;
    var spec = d.args.spec;
    // the page's first run draws the player before its solvers have run (see player_placeholder)
    if (typeof spec === "string") { document.body.className = "waiting"; document.getElementById("wait").textContent = spec; return; }
    if (S && spec.rev === S.rev) { setHeight(document.body.scrollHeight); return; }
    stop();
    try {
      draw(spec).catch(function (e) { window.__trajView.error = String(e); });
    } catch (e) {
      window.__trajView.error = String(e);
      tj.textContent = "The trajectory player failed: " + e;
      setHeight(60);
    }
  });
  send("streamlit:componentReady", {apiVersion: 1});
})();
</script></body></html>
"""


def player_html() -> str:
    return _HTML % {"bar": BAR_HEIGHT, "protocol": STREAMLIT_PROTOCOL_JS}


def player_spec(figs: dict, stacked: bool = False, click: bool = True) -> dict:
    """The component's JSON argument from ``lsr1_core.viz.plots.player_figures``; ``rev`` is a digest of the
    rest, so the browser redraws only when the run (or the layout) changed."""
    spec = {"traj": plain_figure(figs["traj"]), "obj": plain_figure(figs["obj"]), "solvers": figs["solvers"],
            "vline": figs["vline"], "T": figs["T"], "stacked": bool(stacked), "click": bool(click)}
    spec["rev"] = hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=8).hexdigest()
    return spec


def player_height(figs: dict, stacked: bool) -> int:
    obj_h = int(figs["obj"].layout.height or 420)
    return BAR_HEIGHT + (TRAJ_HEIGHT + 8 + obj_h if stacked else max(TRAJ_HEIGHT, obj_h)) + 6


def declare_player():
    import streamlit.components.v1 as components
    # plotly.js's cartesian bundle (scatter, contour): a third of the full bundle's start-up in the browser
    return components.declare_component("trajectory_player", path=str(component_dir("trajectory_player",
                                                                                    player_html(), "cartesian")))


def player_placeholder(key: str, text: str = "Running the solvers…", stacked: bool = False) -> None:
    """The player's frame before its run exists: the same component under the same ``key`` (so the browser
    keeps the frame when the page's next run draws the run into it) showing ``text``. The frame loads
    plotly.js meanwhile (1–3 s in headless Chromium on 2 busy cores), while the server runs the solvers.
    ``spec`` is the text itself: a string argument, unlike a dict, does not make Streamlit import pandas
    (0.4–0.9 s) to ask whether it is a dataframe, so the frame is sent that much sooner."""
    component = importlib.import_module("explorer.player").declare_player()
    height = BAR_HEIGHT + (TRAJ_HEIGHT + 8 + 420 if stacked else max(TRAJ_HEIGHT, 420)) + 6
    component(spec=text, key=key, default=None, height=height)


def trajectory_player(figs: dict, key: str, stacked: bool = False, click: bool = True):
    """Draw the player; returns the last clicked point ``{"x", "y", "n"}`` (or None). Raises OSError when the
    component's files cannot be written (the caller falls back to static charts)."""
    # declared from the imported module: Streamlit names a component after its caller's module, and a page
    # script run by st.navigation has none
    component = importlib.import_module("explorer.player").declare_player()
    return component(spec=player_spec(figs, stacked, click), key=key, default=None,
                     height=player_height(figs, stacked))
