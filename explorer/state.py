"""Shared sidebar and cached computations for the explorer pages."""
from __future__ import annotations

import streamlit as st
import torch

from lsr1_core.runs.catalog import FORM_NAMES, available_models, model_form
from lsr1_core.runs.root import runs_root
from lsr1_core.viz.explore import QN_VARIANTS, SolverSpec, default_specs, lsr1_spec_variants, run_2d

# The L-SR1 model every page starts with (a sidebar label of lsr1_core.runs.catalog.available_models);
# the first pretrained model whose name starts with one of these, in this order. One place to change it.
# The scale-free (qn) form first; the paper form stays selectable, labelled "paper form".
DEFAULT_MODEL = ("pretrained: qn_quadratic", "pretrained: qn_", "pretrained: quadratic")
STEP_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

# Streamlit ellipsizes a multiselect tag at the sidebar's width ("pretrained: profile_…"): the tags show the
# model's name without the "pretrained: " prefix, and a name still too long wraps instead of being cut.
_CSS = """<style>
section[data-testid="stSidebar"] [data-testid="stMultiSelectTagsContainer"] span {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: anywhere; height: auto !important; max-width: none !important;}
</style>"""


def short_label(label: str) -> str:
    """A model's sidebar tag: 'pretrained: profile_rosenbrock' → 'profile_rosenbrock'; runs keep 'run: '."""
    return label.split(": ", 1)[1] if label.startswith("pretrained: ") else label


def default_models(labels) -> list[str]:
    """The sidebar's default choice: the first label for each DEFAULT_MODEL prefix (one model)."""
    for prefix in DEFAULT_MODEL:
        hit = [l for l in labels if l == prefix or l.startswith(prefix)]
        if hit:
            return [sorted(hit, key=len)[0]]
    return [l for l in labels if l.startswith("pretrained: ")][:1]


def sidebar() -> dict:
    """Device, seed, the L-SR1 models to compare and L-SR1's step scale (shared by every page through
    session_state). Models come from the one runs root (``runs_root()``, ``$LSR1_RUNS_ROOT``)."""
    models = available_models(runs_root())
    with st.sidebar:
        st.markdown(_CSS, unsafe_allow_html=True)
        st.header("Settings")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        st.selectbox("Device", devices, key="device", help="2-D pages always run on the CPU (tiny problems)")
        st.number_input("Seed", min_value=0, value=0, key="seed")
        labels = list(models)
        forms = {l: FORM_NAMES.get(model_form(models[l]), "unknown form") for l in labels}
        st.multiselect("L-SR1 models", labels, default=default_models(labels), key="lsr1_models",
                       format_func=lambda l: f"{short_label(l)} · {forms.get(l, '')}",
                       help="shipped models from pretrained/ and the best checkpoints of finished training runs. "
                            "'qn_*': the scale-free form (starts as classical SR1, positive definite, safeguarded; "
                            "the default); the others: the paper's form (Algorithm 1) — 'quadratic' (N = 2), "
                            "'profile_*' (N = 100); '*_nosec' trained without the secant penalty")
        st.multiselect("qn form: variants", list(QN_VARIANTS), default=["as shipped"], key="qn_variants",
                       help="for each scale-free (qn) model: the model as shipped and/or its ablations — without "
                            "the BFGS fallback (a pair SR1 cannot use is skipped, so H can only grow), and also "
                            "with H₀ = γI instead of the two-scale initial matrix. Paper-form models ignore this.")
        st.select_slider("L-SR1 step scale", STEP_SCALES, value=1.0, key="lsr1_scale",
                         help="multiplies every L-SR1 step x_{k+1} = x_k − scale · α ⊙ B̃ g")
        st.caption("Step scale: L-SR1's steps are α ⊙ B̃g. The scale-free form needs none (1); the paper "
                   "form's α was learned at one problem scale, so on a function with other curvature "
                   "scale < 1 shortens and > 1 lengthens every step.")
        if not labels:
            st.info("No L-SR1 model found: train one on the Meta-training page or with "
                    "`python -m lsr1_core.train`.")
    return {"models": models, "scale": float(st.session_state.get("lsr1_scale", 1.0))}


def lsr1_specs(models: dict) -> dict[str, SolverSpec]:
    out = {}
    scale = float(st.session_state.get("lsr1_scale", 1.0))
    variants = st.session_state.get("qn_variants", ["as shipped"])
    for label in st.session_state.get("lsr1_models", []):
        if label in models:
            name = "L-SR1 " + label.split(": ", 1)[1]
            out.update(lsr1_spec_variants(name, str(models[label]), model_form(models[label]), variants, scale))
    return out


# cache_resource, not cache_data: the pages only read a run, and cache_data would unpickle its ~1 000 tensors
# (every step's curvature operator) on each rerun of the page: 0.5 s on 2 quiet cores, seconds on busy ones
@st.cache_resource(show_spinner="running the solvers…", max_entries=64)
def cached_run(function: str, fn_items: tuple, start: tuple, specs: tuple, steps: int, memory: int):
    """A 2-D run (``lsr1_core.viz.explore.run_2d``), shared by every session: do not modify it."""
    return run_2d(function, dict(fn_items), start, list(specs), steps, memory)


def all_specs(function: str, models: dict) -> dict[str, SolverSpec]:
    specs = default_specs(function)
    specs.update(lsr1_specs(models))
    return specs
