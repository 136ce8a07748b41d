"""The real app in headless Chromium: start ``streamlit run explorer/app.py`` on a free local port, open
Debian's chromium through Playwright, and wait for Streamlit's script runs and the browser's paint. Shared by
``tools.bench_app`` and tests/test_browser_e2e.py."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "explorer" / "app.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
# window.__runs: every change of the app's script state, with its time (performance.now())
STATE_LOG = """() => { window.__runs = []; const el = document.querySelector("[data-testid='stApp']");
  new MutationObserver(() => window.__runs.push([performance.now(), el.getAttribute('data-test-script-state')]))
    .observe(el, {attributes: true, attributeFilter: ['data-test-script-state']}); }"""
# resolves after the browser painted twice
PAINTED = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app_server(env: dict | None = None, port: int | None = None, timeout: float = 120.0):
    """A ``streamlit run`` of the app (headless, on 127.0.0.1); yields its URL once it answers its health
    check, and stops it afterwards. Its output goes to a temporary log, quoted when it does not start."""
    port = port or free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="lsr1_app_", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if urlopen(url + "/_stcore/health", timeout=1).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise RuntimeError("streamlit did not start: " + log.read()[-2000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        os.unlink(log.name)


def launch_chromium(playwright, chromium: str = CHROMIUM):
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)


@contextmanager
def app_in_chromium(width: int = 1500, height: int = 1100, env: dict | None = None, chromium: str = CHROMIUM):
    """A fresh app server and a Chromium page of that size; yields (url, page)."""
    from playwright.sync_api import sync_playwright  # optional: only the browser tools need it

    with app_server(env) as url, sync_playwright() as p:
        browser = launch_chromium(p, chromium)
        try:
            yield url, browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def wait_idle(pg, settle_ms: int = 300, timeout_ms: int = 300_000) -> None:
    """Until the app is connected and its script run has ended."""
    pg.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    pg.wait_for_timeout(settle_ms)
    pg.wait_for_selector(IDLE, timeout=timeout_ms)


def browser_action(pg, action, verbose: bool = False) -> float:
    """Seconds from the action until the app's run after it ended and the browser painted twice (call
    ``pg.evaluate(STATE_LOG)`` once on the page first)."""
    t0 = pg.evaluate("() => performance.now()")
    action()
    pg.wait_for_function("t0 => window.__runs.some(([t, s]) => t > t0 && s === 'running')", arg=t0, timeout=300_000)
    pg.wait_for_function("t0 => { const r = window.__runs.filter(([t]) => t > t0); "
                         "return r.length && r[r.length - 1][1] === 'notRunning'; }", arg=t0, timeout=300_000)
    t1 = pg.evaluate(PAINTED)
    if verbose or os.environ.get("LSR1_BENCH_VERBOSE"):
        runs = pg.evaluate("t0 => window.__runs.filter(([t]) => t > t0)", t0)
        print("  run states (ms after the action):", [(round(t - t0), s) for t, s in runs], "painted", round(t1 - t0))
    return (t1 - t0) / 1000


def step_view_frame(pg, timeout_ms: int = 300_000):
    """The HMR page's step-view component frame, once it has drawn."""
    el = pg.locator("iframe[title$='hmr_step_view']")
    el.wait_for(timeout=timeout_ms)
    fr = el.element_handle().content_frame()
    fr.wait_for_function("() => window.__meshView && window.__meshView.renders > 0", timeout=timeout_ms)
    return fr
