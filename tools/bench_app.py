"""Timings for the explorer's quality bar, measured through Streamlit's own test runner.

The bar: the Trajectories page with six solvers and 200 steps renders in under 2 s after first load, and
moving the step slider updates the linked plots in under 0.5 s. The Human mesh recovery page: the first fit
of a sample (every method, 15 inner steps) finishes in under 5 s, and stepping to another inner iteration
updates the page in under 1 s. ``AppTest`` runs the real page script
(widgets, caching, figure building, serialisation of the figures into the page); what it leaves out is the
browser drawing the plotly JSON, which is reported separately as the size of that JSON.

    python -m tools.bench_app                 # prints tables and appends them to docs/benchmarks_app.md
    python -m tools.bench_app --page hmr      # only the Human mesh recovery page
    python -m tools.bench_app --page first-visit   # every page's first visit in Chromium, a fresh server each

Run from the repository root. The browser measurements drive Debian's chromium through Playwright
(``tools.browser``, shared with tests/test_browser_e2e.py).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import dataclass

from streamlit.testing.v1 import AppTest

from tools.browser import (APP, CHROMIUM, PAINTED as _PAINTED, ROOT, STATE_LOG as _STATE_LOG, app_in_chromium,
                           browser_action as _browser_action, step_view_frame, wait_idle)

DOC = ROOT / "docs" / "benchmarks_app.md"
PAGE = "views/trajectories.py"
# The page's widget keys (explorer/views/trajectories.py, single-setting mode).
KEY_FN, KEY_SOLVERS, KEY_STEPS = "tr_fn", "tr_solvers", "tr_steps"
TARGET_RENDER_S, TARGET_SLIDER_S = 2.0, 0.5


@dataclass
class AppTimings:
    function: str
    solvers: list[str]
    steps: int
    first_load_s: float          # fresh session: imports, model loading, solvers run, figures built
    new_setting_s: list[float]   # six solvers × steps, cache cleared before each: compute + render
    cached_s: list[float]        # the same setting again (what a rerun after first load costs)
    figure_json_kb: float        # plotly JSON (and the player's arguments) the browser receives for the page

    def rows(self) -> list[tuple[str, float, float | None]]:
        med = statistics.median
        return [("first load of the page (fresh session)", self.first_load_s, None),
                (f"{len(self.solvers)} solvers × {self.steps} steps, cache cold", med(self.new_setting_s), TARGET_RENDER_S),
                (f"{len(self.solvers)} solvers × {self.steps} steps, cached rerun", med(self.cached_s), TARGET_RENDER_S)]


def _widget(at, kind: str, key: str):
    found = [w for w in getattr(at, kind) if getattr(w, "key", None) == key]
    if not found:
        raise RuntimeError(f"the page has no {kind[:-1]} with key {key!r}; "
                           f"update tools/bench_app.py to match the page in explorer/views/")
    return found[0]


def _timed_run(at, timeout: float) -> float:
    t0 = time.perf_counter()
    at.run(timeout=timeout)
    dt = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError("the page raised: " + "\n".join(e.value for e in at.exception))
    return dt


def _open(page: str, timeout: float):
    """A fresh AppTest session of the app switched to ``page``, and the seconds that took."""
    os.environ.setdefault("LSR1_NO_PROGRESS", "1")
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    t0 = time.perf_counter()
    at.run()
    at.switch_page(page)
    _timed_run(at, timeout)
    return at, time.perf_counter() - t0


def _figure_bytes(at) -> int:
    """Bytes of plotly JSON on the page and of the custom components' arguments: what the browser receives."""
    total = 0
    for node in at.get("plotly_chart"):
        proto = getattr(node, "proto", None)
        spec = getattr(proto, "spec", "") if proto is not None else ""
        total += len(spec)
    for node in at.get("component_instance"):
        total += len(node.proto.json_args) + sum(len(a.bytes) for a in node.proto.special_args)
    return total


def measure(steps: int = 200, n_solvers: int = 6, repeats: int = 3, function: str = "quadratic",
            timeout: float = 300.0) -> AppTimings:
    """The default function is the quadratic: there no solver diverges early, so all six run 200 steps."""
    import streamlit as st

    at, first = _open(PAGE, timeout)
    _widget(at, "selectbox", KEY_FN).set_value(function)
    _timed_run(at, timeout)
    ms = _widget(at, "multiselect", KEY_SOLVERS)
    options = list(ms.options)
    lsr1 = [o for o in options if o.startswith("L-SR1")]
    classical = [o for o in ["SR1 (classical)", "L-BFGS", "Adam", "Gradient descent", "Newton", "AdaHessian", "LODO"]
                 if o in options]
    chosen = (lsr1[:2] + classical)[:n_solvers]
    ms.set_value(chosen)
    _widget(at, "slider", KEY_STEPS).set_value(steps)
    new_setting, cached = [], []
    for _ in range(repeats):
        st.cache_data.clear()
        new_setting.append(_timed_run(at, timeout))
        cached.append(_timed_run(at, timeout))
    fig_kb = _figure_bytes(at) / 1024
    # The step slider lives in the player (in the browser): AppTest cannot move it; measure_browser does.
    return AppTimings(function, chosen, steps, first, new_setting, cached, fig_kb)


@dataclass
class BrowserTimings:
    function: str
    steps: int
    solvers: int
    page_load_s: float       # navigate to the page (server warm) until the run ended and the plots were painted
    new_setting_s: float     # steps 150 → 200: six solvers computed, plots sent and painted
    cached_s: float          # 150 → 200 again, results from the cache
    slider_s: list[float]    # the player's step slider moved by one: paths, points and step line redrawn
    slider_update_ms: list[float]  # of which the player's own update (Plotly.restyle of both plots)
    curvature_s: list[float]  # Curvature page: its step slider moved by one (its fragment reruns)


def measure_browser(function: str = "quadratic", repeats: int = 3, chromium: str = CHROMIUM) -> BrowserTimings:
    """The same page in Debian's chromium (Playwright drives it; the server is a real ``streamlit run``).
    Keyboard only: PageUp on the steps slider adds 10 % of its range (100 → 150 → 200 steps)."""
    with app_in_chromium(1500, 1100, chromium=chromium) as (url, pg):
        pg.goto(url + "/trajectories")  # first load: imports, models; not timed
        wait_idle(pg, 500)
        pg.evaluate(_STATE_LOG)
        box = pg.locator("[data-testid='stSelectbox']", has_text="Function")
        _browser_action(pg, lambda: (box.click(), pg.keyboard.type(function), pg.keyboard.press("Enter")))
        pg.evaluate(_STATE_LOG)
        t0 = time.perf_counter()
        pg.reload()
        wait_idle(pg)
        pg.evaluate(_PAINTED)
        load = time.perf_counter() - t0
        pg.evaluate(_STATE_LOG)
        # The reload starts a new session with the page's defaults (rosenbrock); pick the function again.
        box = pg.locator("[data-testid='stSelectbox']", has_text="Function")
        _browser_action(pg, lambda: (box.click(), pg.keyboard.type(function), pg.keyboard.press("Enter")))
        sliders = pg.locator("[data-testid='stSlider']")
        steps_in = sliders.filter(has_text="steps").first.locator("input[type='range']")
        steps_in.focus()
        _browser_action(pg, lambda: pg.keyboard.press("PageUp"))  # 150
        new_setting = _browser_action(pg, lambda: pg.keyboard.press("PageUp"))  # 200, computed
        steps = int(steps_in.get_attribute("value"))
        _browser_action(pg, lambda: pg.keyboard.press("PageDown"))
        cached = _browser_action(pg, lambda: pg.keyboard.press("PageUp"))  # 200 again, cached
        n_solvers = pg.locator("[data-testid='stMultiSelect']").filter(has_text="Solvers").first \
            .locator("[data-tag-index]").count()
        # The player's slider: handled in the iframe, no app run. From the key press until the player
        # drew the new step and the browser painted twice.
        el = pg.locator("iframe[title$='trajectory_player']")
        fr = el.element_handle().content_frame()
        fr.wait_for_function("() => window.__trajView && window.__trajView.renders > 0", timeout=300_000)
        fr.locator("#step").focus()
        slider, upd = [], []
        for i in range(max(repeats, 5)):
            want = fr.evaluate("() => window.__trajView.step") - 1
            t0 = time.perf_counter()
            pg.keyboard.press("ArrowLeft")
            fr.wait_for_function(f"() => window.__trajView.step === {want}", timeout=60_000)
            fr.evaluate(_PAINTED)
            slider.append(time.perf_counter() - t0)
            upd.append(fr.evaluate("() => window.__trajView.ms"))
        # The Curvature page's step slider (a fragment rerun on the server, its plots redrawn)
        pg.goto(url + "/curvature")
        wait_idle(pg, 500)
        pg.evaluate(_STATE_LOG)
        cv_in = pg.locator("[data-testid='stSlider']").filter(has_text="step k").first.locator("input[type='range']")
        cv_in.focus()
        curv = [_browser_action(pg, lambda: pg.keyboard.press("ArrowRight")) for _ in range(repeats)]
    return BrowserTimings(function, steps, n_solvers, load, new_setting, cached, slider, upd, curv)


def browser_markdown(b: BrowserTimings) -> str:
    med = statistics.median(b.slider_s)
    return "\n".join([
        f"In Chromium (headless, software rendering; {b.function}, the page's default {b.solvers} solvers, "
        f"{b.steps} steps; from the action until the run ended and the browser painted):", "",
        "| what | seconds | target | meets |", "|---|---:|---:|---|",
        f"| page reload, server warm (default problem) | {b.page_load_s:.2f} | | |",
        f"| {b.solvers} solvers × {b.steps} steps, computed | {b.new_setting_s:.2f} | < 2 | "
        f"{'yes' if b.new_setting_s < 2 else 'no'} |",
        f"| {b.solvers} solvers × {b.steps} steps, cached | {b.cached_s:.2f} | < 2 | {'yes' if b.cached_s < 2 else 'no'} |",
        f"| step slider moved by one: every path, current point and the objective's step line (median of "
        f"{len(b.slider_s)}) | {med:.2f} | < 0.5 | {'yes' if med < 0.5 else 'no'} |",
        f"| … of which the player's redraw of both plots (median, ms) | {statistics.median(b.slider_update_ms):.0f} ms | | |",
        f"| Curvature page: step slider moved by one (its fragment reruns; median of {len(b.curvature_s)}) | "
        f"{statistics.median(b.curvature_s):.2f} | < 0.5 | {'yes' if statistics.median(b.curvature_s) < 0.5 else 'no'} |",
        "",
        "The Trajectories step slider and ▶ play run in the browser (the player component holds every step; "
        "no app rerun), so their time does not grow with the server's load.", ""])


def markdown(t: AppTimings, note: str = "") -> str:
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"## Trajectories page, {stamp}",
             "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
             f"Function {t.function}; solvers: {', '.join(t.solvers)}; {t.steps} steps. Median of the repeats, seconds of "
             "`AppTest.run()` (the page script, caching and figure serialisation; not the browser's drawing).",
             "",
             "| what | seconds | target | meets |",
             "|---|---:|---:|---|"]
    for name, sec, target in t.rows():
        lines.append(f"| {name} | {sec:.3f} | {'' if target is None else f'< {target:g}'} | "
                     f"{'' if target is None else ('yes' if sec < target else 'no')} |")
    lines += ["", f"Plotly JSON on the page: {t.figure_json_kb:.0f} KiB.", ""]
    if note:
        lines += [note, ""]
    lines += ["Command: `python -m tools.bench_app`", ""]
    return "\n".join(lines)


# --- the Human mesh recovery page ------------------------------------------------------------------
HMR_PAGE = "views/hmr.py"
TARGET_HMR_FIT_S, TARGET_HMR_STEP_S, TARGET_FIRST_VISIT_S = 5.0, 1.0, 10.0


@dataclass
class HMRTimings:
    checkpoints: dict            # slot → the checkpoint the page chose by default
    methods: int                 # methods fitted per sample
    first_load_s: float          # fresh session: body model, test set, checkpoints, the first sample's fit
    new_sample_s: list[float]    # a sample not fitted before: fit of every method + the page at its last step
    fit_s: list[float]           # of which the fit itself (timed inside the cached fit function)
    step_s: list[float]          # step control moved to a step not visited before (meshes skinned, rendered)
    revisit_s: list[float]       # back to a visited step (meshes and renders from the cache)
    figure_kb: float             # plotly JSON + the 3-D view's buffers sent per step


def _hmr_fit_seconds(at) -> float:
    import re
    for c in at.caption:
        m = re.search(r"steps in ([0-9.]+) s", c.value)
        if m:
            return float(m.group(1))
    return float("nan")


def measure_hmr(repeats: int = 3, timeout: float = 300.0, first_index: int = 40) -> HMRTimings:
    """AppTest timings of the HMR page with its default checkpoints. AppTest reruns the whole script when the
    step slider moves (the browser reruns only the page's fragment), so its step timings are upper bounds."""
    at, first = _open(HMR_PAGE, timeout)
    ckpts = {slot: _widget(at, "selectbox", f"hmr_ckpt_{slot}").value for slot in ("lsr1", "lgd", "lsr1_nosec")}
    new_sample, fit, step, revisit = [], [], [], []
    for i in range(repeats):
        _widget(at, "number_input", "hmr_index").set_value(first_index + i)
        new_sample.append(_timed_run(at, timeout))
        fit.append(_hmr_fit_seconds(at))
    methods = len(_widget(at, "multiselect", next(w.key for w in at.multiselect
                                                   if w.key.startswith("hmr_in3d"))).options)
    for k in [3, 8, 12][:repeats]:
        _widget(at, "slider", "hmr_step").set_value(k)
        step.append(_timed_run(at, timeout))
    kb = _figure_bytes(at) / 1024
    for k in [3, 8, 12][:repeats]:
        _widget(at, "slider", "hmr_step").set_value(k)
        revisit.append(_timed_run(at, timeout))
    return HMRTimings(ckpts, methods, first, new_sample, fit, step, revisit, kb)


@dataclass
class HMRBrowserTimings:
    first_visit_s: float     # a fresh server's first visit of the page, until the 3-D view drew and painted
    page_load_s: float       # navigate to the page (server warm, first sample cached) until the 3-D view drew
    new_sample_s: list[float]  # "+" on the sample number: fit, page, overlays and the 3-D view drawn
    jump_s: list[float]      # Home on the step slider (last step → step 0): meshes skinned and rendered
    step_s: list[float]      # ArrowRight after a 1 s pause: the neighbouring step, prepared by the prefetcher


def measure_hmr_browser(repeats: int = 3, chromium: str = CHROMIUM) -> HMRBrowserTimings:
    """The HMR page in Debian's chromium: seconds from a keyboard/mouse action until the app's run ended, the
    3-D view (a component iframe) drew the new meshes and the browser painted."""
    with app_in_chromium(1500, 1400, chromium=chromium) as (url, pg):

        def loaded():
            wait_idle(pg)
            fr = step_view_frame(pg)
            pg.evaluate(_PAINTED)
            return fr

        t0 = time.perf_counter()
        pg.goto(url + "/hmr")  # the first visit: imports, body model, test set, checkpoints, first fit
        loaded()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        pg.reload()
        fr = loaded()
        load = time.perf_counter() - t0

        def act(action, fr) -> float:
            before = fr.evaluate("() => window.__meshView.renders")
            t0 = time.perf_counter()
            pg.evaluate(_STATE_LOG)
            action()
            pg.wait_for_function("() => window.__runs.some(([t, s]) => s === 'running')", timeout=300_000)
            pg.wait_for_function("() => { const r = window.__runs; return r.length && "
                                 "r[r.length - 1][1] === 'notRunning'; }", timeout=300_000)
            fr.wait_for_function(f"() => window.__meshView.renders > {before}", timeout=300_000)
            fr.evaluate(_PAINTED)
            pg.evaluate(_PAINTED)
            return time.perf_counter() - t0

        plus = pg.locator("[data-testid='stNumberInput']").filter(has_text="test sample") \
            .locator("[data-testid='stNumberInputStepUp']")
        step_in = pg.locator("[data-testid='stSlider']").filter(has_text="inner iteration") \
            .locator("input[type='range']")
        new_sample, jump, steps = [], [], []
        for _ in range(repeats):
            new_sample.append(act(lambda: plus.click(), fr))  # at the last step
            time.sleep(1.0)
            step_in.focus()
            jump.append(act(lambda: pg.keyboard.press("Home"), fr))  # to step 0: not prepared
            time.sleep(1.0)  # a user's pause: the prefetcher prepares steps 1 (and -1)
            steps.append(act(lambda: pg.keyboard.press("ArrowRight"), fr))
            act(lambda: pg.keyboard.press("End"), fr)  # back to the last step (cached), not timed
    return HMRBrowserTimings(first, load, new_sample, jump, steps)


# --- every page's first visit ----------------------------------------------------------------------
PAGES = (("", "Home"), ("trajectories", "Trajectories"), ("curvature", "Curvature & secant"),
         ("benchmarks", "Benchmarks"), ("training", "Meta-training"), ("hmr", "Human mesh recovery"))
# the custom components a page draws into, and the flag their page sets once drawn
COMPONENT_DRAWN = {"trajectories": ("trajectory_player", "window.__trajView && window.__trajView.renders > 0"),
                   "hmr": ("hmr_step_view", "window.__meshView && window.__meshView.renders > 0")}


def first_visit(url: str, pg, path: str) -> float:
    """Seconds from navigating to ``path`` until the script run ended, the page's component (if any) drew and
    the browser painted twice."""
    t0 = time.perf_counter()
    pg.goto(f"{url}/{path}")
    wait_idle(pg)
    if path in COMPONENT_DRAWN:
        name, flag = COMPONENT_DRAWN[path]
        el = pg.locator(f"iframe[title$='{name}']")
        el.wait_for(timeout=300_000)
        el.element_handle().content_frame().wait_for_function(f"() => {flag}", timeout=300_000)
    pg.evaluate(_PAINTED)
    return time.perf_counter() - t0


def measure_first_visits(pages=PAGES, chromium: str = CHROMIUM) -> dict[str, float]:
    """Each page's first visit in Chromium, each on a fresh app server (nothing cached in the process; what
    ``scripts/setup.sh`` builds on disk is there): page title → seconds."""
    out = {}
    for path, title in pages:
        with app_in_chromium(1500, 1100, chromium=chromium) as (url, pg):
            out[title] = first_visit(url, pg, path)
    return out


def first_visit_markdown(visits: dict[str, float]) -> str:
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    lines = [f"## First visit of each page, {stamp}", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, load average {load:.1f} at the end. After "
             "`./scripts/setup.sh`; each page opened in headless Chromium on a fresh `streamlit run` (nothing "
             "cached in the server's process): from navigating until the script run ended, the page's component "
             "(if any) drew and the browser painted.", "",
             "| page | seconds | target | meets |", "|---|---:|---:|---|"]
    for title, sec in visits.items():
        lines.append(f"| {title} | {sec:.2f} | < {TARGET_FIRST_VISIT_S:g} | {'yes' if sec < TARGET_FIRST_VISIT_S else 'no'} |")
    lines += ["", "Command: `python -m tools.bench_app --page first-visit`", ""]
    return "\n".join(lines)


def hmr_markdown(t: HMRTimings, b: HMRBrowserTimings | None = None, note: str = "") -> str:
    med = statistics.median
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    ck = ", ".join(f"{k}: {v}" for k, v in t.checkpoints.items())
    lines = [f"## Human mesh recovery page, {stamp}", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
             f"load average {load:.1f} when it started. {t.methods} methods (checkpoints {ck}; Adam, L-BFGS and the untrained qn form), "
             "15 inner steps, Anny body (13 718 vertices). Median of the repeats, seconds of `AppTest.run()`; "
             "AppTest reruns the whole script for a step change, the browser only the page's fragment.", "",
             "| what | seconds | target | meets |", "|---|---:|---:|---|",
             f"| first load of the page (fresh session: body model, test set, checkpoints, first fit) | "
             f"{t.first_load_s:.3f} | | |"]
    # AppTest jumps 15 → 3 → 8 → 12 without pauses: none of these steps is prepared by the prefetcher
    rows = [(f"first fit of a sample, whole page (median of {len(t.new_sample_s)} new samples)",
             med(t.new_sample_s), TARGET_HMR_FIT_S),
            ("… of which the fit of every method", med(t.fit_s), TARGET_HMR_FIT_S),
            ("step control moved to a step not visited (meshes skinned and rendered; whole script)", med(t.step_s),
             TARGET_HMR_STEP_S),
            ("step control back to a visited step (cached)", med(t.revisit_s), TARGET_HMR_STEP_S)]
    for name, sec, target in rows:
        lines.append(f"| {name} | {sec:.3f} | < {target:g} | {'yes' if sec < target else 'no'} |")
    lines += ["", f"Sent to the browser per step: {t.figure_kb:.0f} KiB (plotly JSON and the 3-D view's "
              "binary buffers).", ""]
    if b is not None:
        ms, mj, st_ = med(b.new_sample_s), med(b.jump_s), med(b.step_s)
        lines += ["In Chromium (headless, software rendering; from the key or click until the run ended, the step "
                  "view drew the new meshes, overlays and curves, and the browser painted):", "",
                  "| what | seconds | target | meets |", "|---|---:|---:|---|",
                  f"| first visit of the page (fresh server) | {b.first_visit_s:.2f} | < {TARGET_FIRST_VISIT_S:g} | "
                  f"{'yes' if b.first_visit_s < TARGET_FIRST_VISIT_S else 'no'} |",
                  f"| page reload, server warm (first sample cached) | {b.page_load_s:.2f} | | |",
                  f"| new sample: fit of every method, overlays, 3-D view (median of {len(b.new_sample_s)}) | "
                  f"{ms:.2f} | < 5 | {'yes' if ms < 5 else 'no'} |",
                  f"| step slider to a step not prepared (Home: last step → 0; median of {len(b.jump_s)}) | "
                  f"{mj:.2f} | < 1 | {'yes' if mj < 1 else 'no'} |",
                  f"| step slider moved by one after a 1 s pause (prefetched neighbour; median of {len(b.step_s)}) | "
                  f"{st_:.2f} | < 1 | {'yes' if st_ < 1 else 'no'} |", ""]
    if note:
        lines += [note, ""]
    lines += ["Command: `python -m tools.bench_app --page hmr`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--solvers", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--function", default="quadratic")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks_app.md")
    ap.add_argument("--page", choices=["all", "trajectories", "hmr", "first-visit"], default="all")
    a = ap.parse_args(argv)
    texts = []
    if a.page in ("all", "trajectories"):
        t = measure(a.steps, a.solvers, a.repeats, a.function)
        note = ""
        if not a.no_browser:
            try:
                note = browser_markdown(measure_browser(a.function, a.repeats))
            except ImportError as e:
                note = f"(No browser measurement: {e}.)"
        texts.append(markdown(t, note))
    if a.page in ("all", "hmr"):
        h = measure_hmr(a.repeats)
        b, note = None, ""
        if not a.no_browser:
            try:
                b = measure_hmr_browser(a.repeats)
            except ImportError as e:
                note = f"(No browser measurement: {e}.)"
        texts.append(hmr_markdown(h, b, note))
    if a.page in ("all", "first-visit") and not a.no_browser:
        texts.append(first_visit_markdown(measure_first_visits()))
    text = "\n".join(texts)
    print(text)
    if not a.no_write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        head = "" if DOC.exists() else ("# Explorer app timings\n\nEach section is appended by "
                                         "`python -m tools.bench_app`.\n\n")
        with open(DOC, "a") as fh:
            fh.write(head + text + "\n")


if __name__ == "__main__":
    main()
