"""End to end in a real browser: start the Streamlit app, open every page in Chromium, no exceptions shown.

Debian's chromium (scripts/setup.sh installs it) is driven by Playwright from PyPI; Playwright's own browser
download is never used. Screenshots land in test-artifacts/ (gitignored) so a person can look at them.
The test skips with a reason when chromium or playwright is missing.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("LSR1_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
# Generous: the first run of a page imports torch and runs the solvers on 2 slow cores.
PAGE_TIMEOUT_MS = 120_000

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                      "(.venv/bin/pip install 'playwright>=1.40')")
if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    port = _free_port()
    log = (ARTIFACTS / "streamlit.log")
    ARTIFACTS.mkdir(exist_ok=True)
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "explorer/app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start; see {log}:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page():
    with playwright_sync.sync_playwright() as p:
        exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1500, "height": 1100})
        yield pg
        browser.close()


def _wait_idle(pg):
    # The state attribute flips to "running" shortly after load; wait for the app, then for an idle run.
    pg.wait_for_selector("[data-testid='stApp']", timeout=PAGE_TIMEOUT_MS)
    pg.wait_for_timeout(500)
    pg.wait_for_selector(IDLE, timeout=PAGE_TIMEOUT_MS)
    # A page may rerun once more (e.g. a widget default written into session_state); settle again.
    pg.wait_for_timeout(800)
    pg.wait_for_selector(IDLE, timeout=PAGE_TIMEOUT_MS)


def _nav_paths(pg) -> list[str]:
    hrefs = pg.eval_on_selector_all("[data-testid='stSidebarNav'] a", "els => els.map(e => e.href)")
    return [urlparse(h).path.strip("/") for h in hrefs]


def test_every_page_renders_without_exception(app_url, page):
    page.goto(app_url)
    _wait_idle(page)
    paths = _nav_paths(page)
    assert len(paths) >= 2, f"expected a navigation with several pages, found {paths}"
    seen = {}
    for path in paths:
        page.goto(f"{app_url}/{path}")
        _wait_idle(page)
        name = path or "home"
        page.screenshot(path=str(ARTIFACTS / f"page_{name}.png"), full_page=True)
        errors = page.locator("[data-testid='stException']")
        assert errors.count() == 0, f"page {name!r} shows an exception: {errors.first.inner_text()[:1500]}"
        seen[name] = page.locator("[data-testid='stMain']").inner_text()
    assert "home" in seen
    # Each page has real content, not just an empty frame.
    for name, text in seen.items():
        assert len(text.strip()) > 40, f"page {name!r} looks empty: {text!r}"


def test_trajectories_page_draws_plots(app_url, page):
    page.goto(f"{app_url}/trajectories")
    _wait_idle(page)
    if page.locator("[data-testid='stException']").count():
        pytest.fail(page.locator("[data-testid='stException']").first.inner_text()[:1500])
    # plotly renders each figure into a .js-plotly-plot div; the page shows a contour and an objective curve.
    page.wait_for_selector(".js-plotly-plot", timeout=PAGE_TIMEOUT_MS)
    n_plots = page.locator(".js-plotly-plot").count()
    assert n_plots >= 2
    # The contour figure carries the solver paths: more than one scatter trace drawn.
    n_traces = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => (d.data||[]).length))")
    assert n_traces >= 3
    page.screenshot(path=str(ARTIFACTS / "trajectories_plots.png"), full_page=True)
