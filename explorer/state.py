"""Shared sidebar, cached computations and the session's keys for the explorer pages.

The ``st.session_state`` keys of the sidebar and of the 2-D pages are built here, in ``keys``: the sidebar's, a
problem setting's (``keys.problem(page)``), a trajectory player's (``keys.player(name)``) and each page's widgets
(``keys.trajectories``, ``keys.curvature``, ``keys.nd``, ``keys.anatomy``, ``keys.psd``); no page writes one by
hand."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
import torch

from explorer.catalog import DEFAULT_MODEL, QN_VARIANTS, STEP_SCALES, default_specs, lsr1_spec_variants
from lsr1_core.runs.catalog import FORM_NAMES, available_models, model_form
from lsr1_core.runs.root import runs_root
from lsr1_core.viz.explore import Setting, SolverSpec, run_2d


# --- session keys ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProblemKeys:
    """The keys of one problem setting's widgets (``explorer.problem.settings``) and of its bookkeeping."""

    prefix: str

    @property
    def function(self) -> str:
        return f"{self.prefix}fn"

    @property
    def cond(self) -> str:
        return f"{self.prefix}cond"

    @property
    def angle(self) -> str:
        return f"{self.prefix}angle"

    @property
    def start_x(self) -> str:
        return f"{self.prefix}sx"

    @property
    def start_y(self) -> str:
        return f"{self.prefix}sy"

    @property
    def solvers(self) -> str:
        return f"{self.prefix}solvers"

    @property
    def steps(self) -> str:
        return f"{self.prefix}steps"

    @property
    def memory(self) -> str:
        return f"{self.prefix}mem"

    def lr(self, label: str) -> str:
        """The learning-rate input of solver ``label``."""
        return f"{self.prefix}lr_{label}"

    @property
    def function_seen(self) -> str:
        """The function whose default start the start inputs hold."""
        return f"{self.prefix}fn_seen"

    @property
    def lsr1_seen(self) -> str:
        """The L-SR1 entries the solver choice last saw."""
        return f"{self.prefix}lsr1_seen"


@dataclass(frozen=True)
class PlayerKeys:
    """The keys of one trajectory player (``name``: "main", or a side of the comparison) and its fallbacks."""

    name: str

    @property
    def player(self) -> str:
        """The component; its value is the last contour click ``{"x", "y", "n"}``."""
        return f"{self.name}_player"

    @property
    def click_seen(self) -> str:
        """The ``n`` of the last click already applied."""
        return f"{self.name}_click_seen"

    @property
    def shown(self) -> str:
        """Set once the page has drawn this player in the session."""
        return f"{self.name}_player_seen"

    @property
    def traj(self) -> str:  # the static charts without the component
        return f"{self.name}_traj"

    @property
    def obj(self) -> str:
        return f"{self.name}_obj"

    def export(self, kind: str) -> str:
        """A download button: ``kind`` "csv", "json" or "html"."""
        return f"{self.name}_{kind}"


@dataclass(frozen=True)
class TrajectoriesKeys:
    compare: str = "tr_compare"
    last_setting: str = "last_run_args"  # the Setting of the single view's last run


@dataclass(frozen=True)
class CurvatureKeys:
    tab: str = "cv_tab"
    step: str = "cv_step"
    form: str = "cv_form"
    who: str = "cv_who"
    cos: str = "cv_cos"
    sec: str = "cv_sec"
    spectra: str = "cv_spec"
    ellipse: str = "cv_ell"


@dataclass(frozen=True)
class NDKeys:
    n: str = "nd_n"
    row: str = "nd_row"
    steps: str = "nd_steps"
    step: str = "nd_step"
    cos: str = "nd_cos"
    sec: str = "nd_sec"
    who: str = "nd_who"
    spectra: str = "nd_spec"


@dataclass(frozen=True)
class AnatomyKeys:
    who: str = "an_who"
    step: str = "an_step"
    figure: str = "an_fig"


@dataclass(frozen=True)
class PSDKeys:
    function: str = "psd_fn"
    model: str = "psd_model"
    figure: str = "psd_fig"


# a page's (or a comparison side's) problem setting → its keys' prefix
PROBLEM_PREFIXES = {"trajectories": "tr_", "curvature": "cv_", "A": "A_", "B": "B_"}


class Keys:
    """``keys``: the one place session keys are written. The sidebar's are shared by every page."""

    device = "device"
    seed = "seed"
    models = "lsr1_models"
    qn_variants = "qn_variants"
    step_scale = "lsr1_scale"
    trajectories = TrajectoriesKeys()
    curvature = CurvatureKeys()
    nd = NDKeys()
    anatomy = AnatomyKeys()
    psd = PSDKeys()

    @staticmethod
    def problem(page: str) -> ProblemKeys:
        """The problem setting of ``page`` ("trajectories", "curvature", or a comparison side "A", "B")."""
        try:
            return ProblemKeys(PROBLEM_PREFIXES[page])
        except KeyError:
            raise KeyError(f"no problem setting {page!r}; one of {sorted(PROBLEM_PREFIXES)}") from None

    @staticmethod
    def player(name: str) -> PlayerKeys:
        """The trajectory player ``name`` ("main", or a comparison side "A", "B")."""
        return PlayerKeys(PROBLEM_PREFIXES[name] if name in ("A", "B") else name)


keys = Keys()

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
        st.selectbox("Device", devices, key=keys.device, help="2-D pages always run on the CPU (tiny problems)")
        st.number_input("Seed", min_value=0, value=0, key=keys.seed)
        labels = list(models)
        forms = {l: FORM_NAMES.get(model_form(models[l]), "unknown form") for l in labels}
        st.multiselect("L-SR1 models", labels, default=default_models(labels), key=keys.models,
                       format_func=lambda l: f"{short_label(l)} · {forms.get(l, '')}",
                       help="shipped models from pretrained/ and the best checkpoints of finished training runs. "
                            "'qn_*': the scale-free form (starts as classical SR1, positive definite, safeguarded; "
                            "the default); the others: the paper's form (Algorithm 1) — 'quadratic' (N = 2), "
                            "'profile_*' (N = 100); '*_nosec' trained without the secant penalty")
        st.multiselect("qn form: variants", list(QN_VARIANTS), default=["as shipped"], key=keys.qn_variants,
                       help="for each scale-free (qn) model: the model as shipped and/or its ablations — without "
                            "the BFGS fallback (a pair SR1 cannot use is skipped, so H can only grow), and also "
                            "with H₀ = γI instead of the two-scale initial matrix. Paper-form models ignore this.")
        st.select_slider("L-SR1 step scale", STEP_SCALES, value=1.0, key=keys.step_scale,
                         help="multiplies every L-SR1 step x_{k+1} = x_k − scale · α ⊙ B̃ g")
        st.caption("Step scale: L-SR1's steps are α ⊙ B̃g. The scale-free form needs none (1); the paper "
                   "form's α was learned at one problem scale, so on a function with other curvature "
                   "scale < 1 shortens and > 1 lengthens every step.")
        if not labels:
            st.info("No L-SR1 model found: train one on the Meta-training page or with "
                    "`python -m lsr1_core.train`.")
    return {"models": models, "scale": step_scale()}


def step_scale() -> float:
    """The sidebar's L-SR1 step scale."""
    return float(st.session_state.get(keys.step_scale, 1.0))


def chosen_models(models: dict) -> list[str]:
    """The sidebar's L-SR1 models (labels of ``models``), in the order chosen."""
    return [m for m in st.session_state.get(keys.models, []) if m in models]


def seed() -> int:
    return int(st.session_state.get(keys.seed, 0))


def lsr1_specs(models: dict) -> dict[str, SolverSpec]:
    out = {}
    scale = step_scale()
    variants = st.session_state.get(keys.qn_variants, ["as shipped"])
    for label in chosen_models(models):
        name = "L-SR1 " + label.split(": ", 1)[1]
        out.update(lsr1_spec_variants(name, str(models[label]), model_form(models[label]), variants, scale))
    return out


# cache_resource, not cache_data: the pages only read a run, and cache_data would unpickle its ~1 000 tensors
# (every step's curvature operator) on each rerun of the page: 0.5 s on 2 quiet cores, seconds on busy ones.
# The cache's key is the Setting itself (Streamlit hashes a dataclass by its fields).
@st.cache_resource(show_spinner="running the solvers…", max_entries=64)
def cached_run(setting: Setting):
    """A 2-D run (``lsr1_core.viz.explore.run_2d``), shared by every session: do not modify it."""
    return run_2d(setting)


def all_specs(function: str, models: dict) -> dict[str, SolverSpec]:
    specs = default_specs(function)
    specs.update(lsr1_specs(models))
    return specs
