"""App speed: ``python -m explorer.bench_app`` measures the Trajectories page with six solvers and 200 steps
(first load, a cached re-run, and moving the step slider) with Streamlit's AppTest, and writes the section
"Explorer app" of docs/benchmarks.md. AppTest runs the page script exactly as the server does; the browser's
own drawing time is not included."""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
SOLVERS = ["L-SR1 quadratic", "SR1 (classical)", "L-BFGS", "Adam", "Gradient descent", "Newton"]
BEGIN, END = "<!-- app-bench:begin -->", "<!-- app-bench:end -->"


def measure(repeats: int = 5) -> dict:
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=300).run()
    at.switch_page("views/trajectories.py").run()
    at.multiselect(key="tr_solvers").set_value(SOLVERS)
    at.slider(key="tr_steps").set_value(200)
    t0 = time.perf_counter()
    at.selectbox(key="tr_fn").set_value("quadratic").run()
    first = time.perf_counter() - t0
    assert not at.exception, at.exception
    reruns, slider = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        at.run()
        reruns.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        at.slider(key="main_step").set_value(20 + 30 * i).run()
        slider.append(time.perf_counter() - t0)
    return {"first_s": first, "rerun_s": statistics.median(reruns), "slider_s": statistics.median(slider)}


def main() -> int:
    r = measure()
    section = "\n".join([
        BEGIN, "## Explorer app (Trajectories page: six solvers, 200 steps, quadratic)", "",
        "Command: `python -m explorer.bench_app` (Streamlit AppTest: the page script as the server runs it, "
        "without the browser's drawing).", "",
        f"- first load, solvers computed: {r['first_s']:.2f} s",
        f"- page after the first load (results cached): {r['rerun_s']:.2f} s (target < 2 s)",
        f"- moving the step slider, all linked plots rebuilt: {r['slider_s']:.2f} s (target < 0.5 s)", "", END])
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
