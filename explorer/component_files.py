"""Files for the explorer's small custom Streamlit components (an index.html plus plotly.js).

Each component is one HTML page that speaks Streamlit's component postMessage protocol itself (no npm build)
and loads the plotly.js that ships inside the installed ``plotly`` package. The folder is written once per
(HTML, plotly version) into the temporary directory, so plotly.js is not copied into the repository.
"""
from __future__ import annotations

import json
from pathlib import Path

# The postMessage side of streamlit-component-lib, shared by the components' pages.
STREAMLIT_PROTOCOL_JS = r"""
  function send(type, data) {
    window.parent.postMessage(Object.assign({isStreamlitMessage: true, type: type}, data || {}), "*");
  }
  function setValue(value) { send("streamlit:setComponentValue", {value: value, dataType: "json"}); }
  function setHeight(h) { send("streamlit:setFrameHeight", {height: h}); }
"""


def plain_figure(fig) -> dict:
    """A plotly figure as plain JSON data (numeric arrays as plotly's {dtype, bdata}, which plotly.js decodes)."""
    return json.loads(fig.to_json())


def plotly_js_path() -> Path:
    import plotly
    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
