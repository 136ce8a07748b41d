"""End-to-end: the real app in headless Debian Chromium driven by Playwright; screenshots go to test-artifacts/.
Starting the app and Chromium is ``tools.browser``'s, shared with the app benchmark (``python -m tools.bench_app``)."""
import os

import pytest

from tools.browser import CHROMIUM, ROOT, app_server, launch_chromium, step_view_frame

ARTIFACTS = ROOT / "test-artifacts"
PAGES = [("", "home"), ("trajectories", "trajectories"), ("curvature", "curvature"), ("benchmarks", "benchmarks"),
         ("training", "training"), ("hmr", "hmr")]
TALL = {"hmr": 2900}  # pages whose content runs below the default viewport: screenshot them in a taller one

pw = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with app_server({"LSR1_RUNS_ROOT": str(tmp_path_factory.mktemp("runs")), "LSR1_REFRESH_S": "3600"},
                    timeout=60) as url:
        yield url


@pytest.mark.slow
def test_every_page_renders_without_exceptions(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with pw.sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        for path, name in PAGES:
            page.set_viewport_size({"width": 1500, "height": TALL.get(name, 1100)})
            page.goto(f"{server}/{path}", wait_until="domcontentloaded")
            page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
            # wait until the script has finished running (it starts as running after connecting)
            page.wait_for_timeout(800)
            page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)
            page.wait_for_timeout(1500)  # plotly draws after the script ends
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            exceptions = page.locator("[data-testid='stException']")
            assert exceptions.count() == 0, f"{name}: " + exceptions.first.inner_text()[:1000]
            if name in ("curvature", "benchmarks", "hmr"):  # trajectories: inside the player's iframe, below
                assert page.locator(".js-plotly-plot").count() >= 1, f"{name}: no plotly figure drawn"
            if name == "trajectories":
                _trajectory_player_scrubs_and_sets_the_start(page)
                page.screenshot(path=str(ARTIFACTS / "trajectories_clicked.png"), full_page=True)
            if name == "hmr":
                _hmr_step_keeps_the_camera(page)
                page.screenshot(path=str(ARTIFACTS / "hmr_stepped.png"), full_page=True)
                _hmr_every_mesh_in_view(page)
                page.screenshot(path=str(ARTIFACTS / "hmr_all_methods.png"), full_page=True)
        browser.close()


_TRAJ_STATE = """() => { const gd = document.getElementById('traj'), ob = document.getElementById('obj');
  const pick = (g, i) => ({x: Array.from(g.data[i].x), y: Array.from(g.data[i].y)});
  const v = window.__trajView;
  return {view: {step: v.step, renders: v.renders, updates: v.updates, error: v.error},
          contour: gd.querySelectorAll('.contourlayer path').length,
          lines: v.S.solvers.map(o => pick(gd, o.line)), markers: v.S.solvers.map(o => pick(gd, o.marker)),
          omarkers: v.S.solvers.map(o => pick(ob, o.omarker)), vline: pick(ob, v.S.vline),
          solvers: v.S.solvers}; }"""


def _trajectory_player_scrubs_and_sets_the_start(page):
    """The Trajectories page's player (a component iframe): its slider moves every path, current point and the
    objective plot's step line to the chosen step in the browser, without rerunning the app; a click on the
    contour makes that point the start of every solver."""
    frame_el = page.locator("iframe[title$='trajectory_player']")
    assert frame_el.count() == 1, "trajectories: no player"
    frame = frame_el.element_handle().content_frame()
    frame.wait_for_function("() => window.__trajView && window.__trajView.renders > 0", timeout=60_000)
    first = frame.evaluate(_TRAJ_STATE)
    assert first["view"]["error"] is None and first["contour"] > 0, first["view"]
    T = first["view"]["step"]
    page.evaluate("""() => { window.__runs = []; const el = document.querySelector("[data-testid='stApp']");
      new MutationObserver(() => window.__runs.push(el.getAttribute('data-test-script-state')))
        .observe(el, {attributes: true, attributeFilter: ['data-test-script-state']}); }""")
    frame.locator("#step").focus()
    for key, want in (("Home", 0), ("ArrowRight", 1), ("ArrowRight", 2), ("End", T)):
        frame.locator("#step").press(key)
        frame.wait_for_function(f"() => window.__trajView.step === {want}", timeout=10_000)
        st = frame.evaluate(_TRAJ_STATE)
        for sol, line, mk, om in zip(st["solvers"], st["lines"], st["markers"], st["omarkers"]):
            k = min(want, len(sol["x"]) - 1)
            assert len(line["x"]) == k + 1 and line["x"] == sol["x"][:k + 1], (sol["label"], want)
            assert mk["x"] == [sol["x"][k]] and mk["y"] == [sol["y"][k]], (sol["label"], want)
            j = min(want, len(sol["f"]) - 1)
            assert om["x"] == [j] and om["y"] == [sol["f"][j]], (sol["label"], want)
        assert st["vline"]["x"] == [want, want]
    assert "running" not in page.evaluate("() => window.__runs"), "scrubbing reran the app"
    # click the contour at (0.5, 0.5): the page reruns with that start
    pos = frame.evaluate("""() => { const gd = document.getElementById('traj');
      const bb = gd.querySelector('.nsewdrag').getBoundingClientRect();
      return [bb.left + gd._fullLayout.xaxis.l2p(0.5), bb.top + gd._fullLayout.yaxis.l2p(0.5)]; }""")
    box = frame_el.bounding_box()
    page.mouse.click(box["x"] + pos[0], box["y"] + pos[1])
    frame.wait_for_function(f"() => window.__trajView.renders > {first['view']['renders']}", timeout=120_000)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)
    st = frame.evaluate(_TRAJ_STATE)
    for sol in st["solvers"]:
        assert sol["x"][0] == pytest.approx(0.5, abs=0.02) and sol["y"][0] == pytest.approx(0.5, abs=0.02), sol
    starts = page.locator("[data-testid='stNumberInput']").filter(has_text="start x").locator("input")
    assert float(starts.first.input_value()) == pytest.approx(0.5, abs=0.02)
    assert page.locator("[data-testid='stException']").count() == 0


_MESH_STATE = """() => { const gd = document.getElementById('mesh');
  return {eye: gd._fullLayout.scene._scene.getCamera().eye, meshes: gd.data.filter(t => t.type === 'mesh3d').length,
          view: JSON.parse(JSON.stringify(window.__meshView))}; }"""


def _hmr_step_keeps_the_camera(page):
    """The HMR page's 3-D view (a component iframe): drag to rotate, step back once with the keyboard; the
    meshes of the new step arrive and the rotated camera stays."""
    assert page.locator("iframe[title$='hmr_step_view']").count() == 1, "hmr: no 3-D mesh view"
    frame = step_view_frame(page, timeout_ms=60_000)
    before = frame.evaluate(_MESH_STATE)
    assert before["meshes"] >= 1 and before["view"]["error"] is None, before
    # wait until the view has settled (Streamlit re-sends the arguments once the frame height is known)
    renders = -1
    while renders != frame.evaluate("() => window.__meshView.renders"):
        renders = frame.evaluate("() => window.__meshView.renders")
        page.wait_for_timeout(1000)
    box = frame.locator("#mesh").bounding_box()  # the 3-D plot, in page coordinates
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.wait_for_timeout(100)
    page.mouse.down()
    page.wait_for_timeout(100)
    for i in range(1, 11):  # slowly: the WebGL scene handles few events per second on a busy CPU
        page.mouse.move(x + 15 * i, y + 4 * i)
        page.wait_for_timeout(30)
    page.mouse.up()
    page.wait_for_timeout(800)
    rotated = frame.evaluate(_MESH_STATE)
    assert rotated["eye"] != before["eye"], ("dragging did not rotate the 3-D view", before, rotated)
    step = before["view"]["step"]
    slider = page.locator("[data-testid='stSlider']").filter(has_text="inner iteration").locator("input[type='range']")
    slider.focus()
    page.keyboard.press("ArrowLeft")
    frame.wait_for_function(f"() => window.__meshView.step === {step - 1}", timeout=60_000)
    after = frame.evaluate(_MESH_STATE)
    assert after["view"]["renders"] > rotated["view"]["renders"] and after["view"]["error"] is None
    for k in ("x", "y", "z"):
        assert after["eye"][k] == pytest.approx(rotated["eye"][k], abs=1e-6), (rotated["eye"], after["eye"])
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)
    page.wait_for_timeout(1000)
    assert page.locator("[data-testid='stException']").count() == 0


# every mesh's vertices (every 7th) through the 3-D scene's own model, view and projection matrices: the
# normalised device coordinates (x, y) of each mesh's extent; inside the view when within [-1, 1]
_MESH_NDC = """() => { const gd = document.getElementById('mesh'), sc = gd._fullLayout.scene._scene;
  const c = sc.glplot.cameraParams, ds = sc.dataScale;
  const mul = (m, v) => [0, 1, 2, 3].map(i => m[i] * v[0] + m[4 + i] * v[1] + m[8 + i] * v[2] + m[12 + i] * v[3]);
  return gd.data.filter(t => t.type === 'mesh3d').map(t => {
    let lo = [1e9, 1e9], hi = [-1e9, -1e9];
    for (let i = 0; i < t.x.length; i += 7) {
      const q = mul(c.projection, mul(c.view, mul(c.model, [t.x[i] * ds[0], t.y[i] * ds[1], t.z[i] * ds[2], 1])));
      const u = q[0] / q[3], v = q[1] / q[3];
      lo = [Math.min(lo[0], u), Math.min(lo[1], v)]; hi = [Math.max(hi[0], u), Math.max(hi[1], v)];
    }
    return {name: t.name, lo: lo, hi: hi}; }); }"""


def _hmr_every_mesh_in_view(page):
    """Five methods and the ground truth in the 3-D view: every mesh projects inside the plot (issue 16: with
    all of them shown, the outer meshes used to fall outside the view)."""
    idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
    frame = step_view_frame(page, timeout_ms=60_000)
    shown = page.locator("[data-testid='stMultiSelect']").filter(has_text="meshes shown")
    for label in ("L-SR1 (no secant)", "Adam", "L-BFGS"):
        shown.locator("input").click()
        page.keyboard.type(label)
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.wait_for_timeout(800)
        page.wait_for_selector(idle, timeout=120_000)
    renders = frame.evaluate("() => window.__meshView.renders")
    page.get_by_text("ground truth", exact=True).click()
    frame.wait_for_function(f"() => window.__meshView.renders > {renders} && "
                            "document.getElementById('mesh').data.filter(t => t.type === 'mesh3d').length === 6",
                            timeout=120_000)
    page.wait_for_selector(idle, timeout=120_000)
    page.wait_for_timeout(1000)
    extents = frame.evaluate(_MESH_NDC)
    assert [e["name"] for e in extents] == ["L-SR1", "LGD", "L-SR1 (no secant)", "Adam", "L-BFGS", "Ground truth"]
    for e in extents:
        assert -1 < e["lo"][0] and e["hi"][0] < 1 and -1 < e["lo"][1] and e["hi"][1] < 1, e
    assert page.locator("[data-testid='stException']").count() == 0
