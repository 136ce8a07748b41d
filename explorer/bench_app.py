"""Timings for the explorer's quality bar, measured through Streamlit's own test runner.

The bar: the Trajectories page with six solvers and 200 steps renders in under 2 s after first load, and
moving the step slider updates the linked plots in under 0.5 s. ``AppTest`` runs the real page script
(widgets, caching, figure building, serialisation of the figures into the page); what it leaves out is the
browser drawing the plotly JSON, which is reported separately as the size of that JSON.

    python -m explorer.bench_app            # prints a table and appends it to docs/benchmarks_app.md

This module imports streamlit's testing package only inside ``measure`` (the library itself never needs
streamlit); it is a command, not part of the figure builders.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "explorer" / "app.py"
DOC = ROOT / "docs" / "benchmarks_app.md"
PAGE = "views/trajectories.py"
# The page's widget keys (explorer/views/trajectories.py, single-setting mode).
KEY_FN, KEY_SOLVERS, KEY_STEPS, KEY_STEP = "tr_fn", "tr_solvers", "tr_steps", "main_step"
TARGET_RENDER_S, TARGET_SLIDER_S = 2.0, 0.5


@dataclass
class AppTimings:
    function: str
    solvers: list[str]
    steps: int
    first_load_s: float          # fresh session: imports, model loading, solvers run, figures built
    new_setting_s: list[float]   # six solvers × steps, cache cleared before each: compute + render
    cached_s: list[float]        # the same setting again (what a rerun after first load costs)
    slider_s: list[float]        # step slider moved to a new position
    figure_json_kb: float        # plotly JSON the browser must parse and draw, all charts on the page

    def rows(self) -> list[tuple[str, float, float | None]]:
        med = statistics.median
        return [("first load of the page (fresh session)", self.first_load_s, None),
                (f"{len(self.solvers)} solvers × {self.steps} steps, cache cold", med(self.new_setting_s), TARGET_RENDER_S),
                (f"{len(self.solvers)} solvers × {self.steps} steps, cached rerun", med(self.cached_s), TARGET_RENDER_S),
                ("step slider moved (linked plots rebuilt)", med(self.slider_s), TARGET_SLIDER_S)]


def _widget(at, kind: str, key: str):
    found = [w for w in getattr(at, kind) if getattr(w, "key", None) == key]
    if not found:
        raise RuntimeError(f"the Trajectories page has no {kind[:-1]} with key {key!r}; "
                           f"update explorer/bench_app.py to match explorer/views/trajectories.py")
    return found[0]


def _timed_run(at, timeout: float) -> float:
    t0 = time.perf_counter()
    at.run(timeout=timeout)
    dt = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError("the page raised: " + "\n".join(e.value for e in at.exception))
    return dt


def _figure_bytes(at) -> int:
    """Bytes of plotly JSON on the page: what the browser receives for the charts."""
    total = 0
    for node in at.get("plotly_chart"):
        proto = getattr(node, "proto", None)
        spec = getattr(proto, "spec", "") if proto is not None else ""
        total += len(spec)
    return total


def measure(steps: int = 200, n_solvers: int = 6, repeats: int = 3, function: str = "quadratic",
            timeout: float = 300.0) -> AppTimings:
    """The default function is the quadratic: there no solver diverges early, so all six run 200 steps."""
    os.environ.setdefault("LSR1_NO_PROGRESS", "1")
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=timeout)
    t0 = time.perf_counter()
    at.run()
    at.switch_page(PAGE)
    _timed_run(at, timeout)
    first = time.perf_counter() - t0
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
    new_setting, cached, slider = [], [], []
    for _ in range(repeats):
        st.cache_data.clear()
        new_setting.append(_timed_run(at, timeout))
        cached.append(_timed_run(at, timeout))
    fig_kb = _figure_bytes(at) / 1024
    for i in range(repeats):
        s = _widget(at, "slider", KEY_STEP)
        s.set_value([steps // 4, steps // 2, 3 * steps // 4][i % 3])
        slider.append(_timed_run(at, timeout))
    return AppTimings(function, chosen, steps, first, new_setting, cached, slider, fig_kb)


@dataclass
class BrowserTimings:
    function: str
    steps: int
    solvers: int
    page_load_s: float       # navigate to the page (server warm) until the run ended and the plots were painted
    new_setting_s: float     # steps 150 → 200: six solvers computed, plots sent and painted
    cached_s: float          # 150 → 200 again, results from the cache
    slider_s: list[float]    # the linked step slider moved by one position


_STATE_LOG = """() => { window.__runs = []; const el = document.querySelector("[data-testid='stApp']");
  new MutationObserver(() => window.__runs.push([performance.now(), el.getAttribute('data-test-script-state')]))
    .observe(el, {attributes: true, attributeFilter: ['data-test-script-state']}); }"""
_PAINTED = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"


def _browser_action(pg, action) -> float:
    """Seconds from the action until the app's run after it ended and the browser painted twice."""
    t0 = pg.evaluate("() => performance.now()")
    action()
    pg.wait_for_function("t0 => window.__runs.some(([t, s]) => t > t0 && s === 'running')", arg=t0, timeout=300_000)
    pg.wait_for_function("t0 => { const r = window.__runs.filter(([t]) => t > t0); "
                         "return r.length && r[r.length - 1][1] === 'notRunning'; }", arg=t0, timeout=300_000)
    t1 = pg.evaluate(_PAINTED)
    if os.environ.get("LSR1_BENCH_VERBOSE"):
        runs = pg.evaluate("t0 => window.__runs.filter(([t]) => t > t0)", t0)
        print("  run states (ms after the action):", [(round(t - t0), s) for t, s in runs], "painted", round(t1 - t0))
    return (t1 - t0) / 1000


def measure_browser(function: str = "quadratic", repeats: int = 3,
                    chromium: str = "/usr/bin/chromium") -> BrowserTimings:
    """The same page in Debian's chromium (Playwright drives it; the server is a real ``streamlit run``).
    Keyboard only: PageUp on the steps slider adds 10 % of its range (100 → 150 → 200 steps)."""
    import socket
    import subprocess
    import sys
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync"])
            pg = browser.new_page(viewport={"width": 1500, "height": 1100})
            idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
            pg.goto(url + "/trajectories")  # first load: imports, models; not timed
            pg.wait_for_selector("[data-testid='stApp']", timeout=300_000)
            pg.wait_for_timeout(500)
            pg.wait_for_selector(idle, timeout=300_000)
            pg.evaluate(_STATE_LOG)
            box = pg.locator("[data-testid='stSelectbox']", has_text="Function")
            _browser_action(pg, lambda: (box.click(), pg.keyboard.type(function), pg.keyboard.press("Enter")))
            pg.evaluate(_STATE_LOG)
            t0 = time.perf_counter()
            pg.reload()
            pg.wait_for_selector("[data-testid='stApp']", timeout=300_000)
            pg.wait_for_timeout(300)
            pg.wait_for_selector(idle, timeout=300_000)
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
            step_in = pg.locator("[data-testid='stSlider']").filter(has_text="step").last.locator("input[type='range']")
            step_in.focus()
            slider = [_browser_action(pg, lambda: pg.keyboard.press("ArrowLeft")) for _ in range(repeats)]
            n_solvers = pg.locator("[data-testid='stMultiSelect']").filter(has_text="Solvers").first \
                .locator("[data-tag-index]").count()
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return BrowserTimings(function, steps, n_solvers, load, new_setting, cached, slider)


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
        f"| step slider moved by one (median of {len(b.slider_s)}) | {med:.2f} | < 0.5 | {'yes' if med < 0.5 else 'no'} |",
        ""])


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
    lines += ["Command: `python -m explorer.bench_app`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--solvers", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--function", default="quadratic")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks_app.md")
    a = ap.parse_args(argv)
    t = measure(a.steps, a.solvers, a.repeats, a.function)
    note = ""
    if not a.no_browser:
        try:
            note = browser_markdown(measure_browser(a.function, a.repeats))
        except ImportError as e:
            note = f"(No browser measurement: {e}.)"
    text = markdown(t, note)
    print(text)
    if not a.no_write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        head = "" if DOC.exists() else ("# Explorer app timings\n\nEach section is appended by "
                                         "`python -m explorer.bench_app`.\n\n")
        with open(DOC, "a") as fh:
            fh.write(head + text + "\n")


if __name__ == "__main__":
    main()
