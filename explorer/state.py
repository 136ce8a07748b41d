"""Shared sidebar and cached computations for the explorer pages."""
from __future__ import annotations

import streamlit as st
import torch

from lsr1_core.runs.catalog import available_models
from lsr1_core.viz.explore import SolverSpec, default_specs, run_2d


def sidebar() -> dict:
    """Device, seed and the L-SR1 models to compare (shared by every page through session_state)."""
    models = available_models()
    with st.sidebar:
        st.header("Settings")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        st.selectbox("Device", devices, key="device", help="2-D pages always run on the CPU (tiny problems)")
        st.number_input("Seed", min_value=0, value=0, key="seed")
        labels = list(models)
        default = [l for l in labels if l.startswith("pretrained: quadratic")][:2]
        st.multiselect("L-SR1 models", labels, default=default, key="lsr1_models",
                       help="pretrained/ ships 'quadratic' (N = 2, with the secant penalty) and 'quadratic_nosec', "
                            "and the N = 100 performance-profile models 'profile_*' (quadratic, rosenbrock, "
                            "rastrigin; each with and without the secant penalty); finished training runs "
                            "appear here too")
        if not labels:
            st.info("No L-SR1 model found: train one on the Meta-training page or with "
                    "`python -m lsr1_core.train`.")
    return {"models": models}


def lsr1_specs(models: dict) -> dict[str, SolverSpec]:
    out = {}
    for label in st.session_state.get("lsr1_models", []):
        if label in models:
            name = "L-SR1 " + label.split(": ", 1)[1]
            out[name] = SolverSpec(name, "lsr1", (), str(models[label]))
    return out


@st.cache_data(show_spinner="running the solvers…", max_entries=64)
def cached_run(function: str, fn_items: tuple, start: tuple, specs: tuple, steps: int, memory: int):
    return run_2d(function, dict(fn_items), start, list(specs), steps, memory)


def all_specs(function: str, models: dict) -> dict[str, SolverSpec]:
    specs = default_specs(function)
    specs.update(lsr1_specs(models))
    return specs
