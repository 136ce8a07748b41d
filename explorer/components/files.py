"""The folder a custom component is served from: its ``index.html`` and the plotly.js it loads.

The full plotly.js bundle of the installed plotly package is 4.8 MB; headless Chromium spends 1.5–4 s (2 shared
cores) parsing and starting it before a component can draw anything, on every first visit of a page. Each
component loads instead the smallest partial bundle that has its trace types, from ``assets/vendor/plotly``
(the npm packages ``plotly.js-cartesian-dist-min`` and ``plotly.js-gl3d-dist-min``, MIT licence, the same
plotly.js version as the plotly package): ``cartesian`` (scatter, contour, heatmap, …: 1.5 MB) for the
trajectory player, ``gl3d`` (scatter, scatter3d, mesh3d, …: 1.75 MB) for the HMR step view. When a bundle is
missing or its version differs from the installed plotly.js (after an upgrade of plotly), the full bundle is
served, so a component never runs against another plotly.js than the figures were made for.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from explorer.component_files import plotly_js_path

VENDOR = Path(__file__).resolve().parents[2] / "assets" / "vendor" / "plotly"
BUNDLES = {"cartesian": "plotly-cartesian.min.js", "gl3d": "plotly-gl3d.min.js"}


@lru_cache(maxsize=8)
def js_version(path: Path) -> str | None:
    """The plotly.js version in a bundle's header comment ("plotly.js (gl3d - minified) v4.1.1"), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(400).decode("utf-8", "replace")
    except OSError:
        return None
    m = re.search(r"plotly\.js[^\n]*?\bv(\d+\.\d+\.\d+)", head)
    return m.group(1) if m else None


def plotly_bundle(kind: str = "full") -> Path:
    """The plotly.js file for a component: the partial bundle ``kind`` ("cartesian", "gl3d") when it is there
    and of the installed plotly.js version, else the installed full bundle."""
    full = plotly_js_path()
    if kind in BUNDLES:
        part = VENDOR / BUNDLES[kind]
        if js_version(part) is not None and js_version(part) == js_version(full):
            return part
    return full


def component_dir(name: str, html: str, bundle: str = "full") -> Path:
    """A folder holding ``index.html`` (``html``) and ``plotly.min.js`` (:func:`plotly_bundle` of ``bundle``),
    written atomically into the temporary directory once per (HTML, plotly.js file), reused when present.
    Raises OSError when the temporary directory cannot be written."""
    js = plotly_bundle(bundle)
    tag = hashlib.blake2b(f"{html}\0{js}\0{js.stat().st_size}\0{js_version(js)}".encode(), digest_size=6).hexdigest()
    d = Path(tempfile.gettempdir()) / f"lsr1_explorer_{name}_{tag}"
    if not (d / "index.html").exists() or not (d / "plotly.min.js").exists():
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".plotly.{os.getpid()}.tmp"
        shutil.copyfile(js, tmp)
        os.replace(tmp, d / "plotly.min.js")
        tmp = d / f".index.{os.getpid()}.tmp"
        tmp.write_text(html)
        os.replace(tmp, d / "index.html")  # written last: its presence means the folder is complete
    return d
