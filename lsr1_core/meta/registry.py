"""The problems the runs manager can train, by *kind*: what it needs to know of each, and nothing else.

A run's ``config.json`` records its kind under ``"problem"`` (``{"problem": "lsr1", "task": ...}``); the runs
manager (``lsr1_core.runs``) reads it here and never imports a problem module itself. A kind is a
:class:`ProblemKind`: its config class, the :class:`~lsr1_core.meta.train.MetaProblem` the core ``Trainer``
builds from that config, its named presets and how a preset becomes a validated config.

Adding a problem touches only this file's ``PROBLEM_MODULES`` and the problem's own files: its module defines
``RUNS_PROBLEM = {"kind": ..., "label": ..., "config_class": ..., "problem": ..., "presets": ...,
"make_config": ..., "run_name": ...}`` (plain values: the module never imports this registry, so meta does not
depend on the problems nor they on it), and this registry loads the module by name the first time a kind is
looked up. The L-SR1 meta-training (``lsr1``) is registered below; human mesh recovery (``hmr``) by
``lsr1_core.hmr.presets``.

Backward compatibility: run directories written before kinds were recorded have no ``"problem"`` key. Their
kind is inferred in one place, :func:`kind_of_dict` (an HMR config is the one with a ``stage`` field), and
only for such old files.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..checkpoints import read_regular_file
from ..errors import LSR1Error
from .presets import PRESETS, TrainConfig, preset
# the training core, for the runs manager (its one door into meta: it imports no problem or training module)
from .train import (MAX_RUN_JSON_BYTES, LSR1Problem, Trainer, as_integer, check_latest_present,  # noqa: F401
                    read_metric_records, read_run_config as _read_typed_config)

KIND_KEY = "problem"  # the key of config.json that names the run's problem kind
# modules that define RUNS_PROBLEM (loaded on the first lookup; a missing optional one is skipped)
PROBLEM_MODULES = ("lsr1_core.hmr.presets", "lsr1_core.meta.scalar_problem")
# config.json files written before kinds were recorded: (a key only that kind's configs have, its kind)
LEGACY_MARKERS = (("stage", "hmr"),)
DEFAULT_KIND = "lsr1"


@dataclass(frozen=True)
class ProblemKind:
    """One trainable problem as the runs manager sees it.

    kind: the name recorded in config.json; label: shown on the page; config_class: a ConfigMixin dataclass
    (``to_dict``/``from_dict``/``replace``, with ``iterations``); problem: the MetaProblem class the core
    Trainer builds (``Trainer(cfg, run_dir, problem=problem)``); presets: name → config factory;
    make_config(name, **overrides): a validated config from a preset; run_name(cfg): the stem of an
    automatic run id."""

    kind: str
    label: str
    config_class: type
    problem: Callable
    presets: Mapping[str, Callable]
    make_config: Callable
    run_name: Callable

    def config(self, name: str, overrides: dict | None = None):
        """``make_config(name, **overrides)`` with every failure an ``LSR1Error``."""
        try:
            return self.make_config(name, **(overrides or {}))
        except LSR1Error:
            raise
        except (TypeError, AttributeError, OverflowError) as e:
            raise LSR1Error(f"invalid setting for {self.label} preset {name!r}: {e}") from None


_KINDS: dict[str, ProblemKind] = {}
_loaded = False


def register(problem: ProblemKind | Mapping) -> ProblemKind:
    """Add a kind (a :class:`ProblemKind` or the mapping of its fields); a kind or preset name that is
    already taken by another problem is an error."""
    p = problem if isinstance(problem, ProblemKind) else ProblemKind(**dict(problem))
    old = _KINDS.get(p.kind)
    if old is not None and old != p:
        raise LSR1Error(f"problem kind {p.kind!r} is registered twice")
    for other in _KINDS.values():
        clash = set(other.presets) & set(p.presets) if other.kind != p.kind else set()
        if clash:
            raise LSR1Error(f"preset names {sorted(clash)} of {p.kind!r} are already {other.kind!r} presets")
    _KINDS[p.kind] = p
    return p


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in PROBLEM_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional problem whose dependencies are not installed
            continue
        spec = getattr(module, "RUNS_PROBLEM", None)
        if spec is not None:
            register(spec)


def kinds() -> dict[str, ProblemKind]:
    """Every registered kind, by name."""
    _load()
    return dict(_KINDS)


def get(kind: str) -> ProblemKind:
    """The kind named ``kind``; ``LSR1Error`` naming the known ones otherwise."""
    found = kinds().get(kind) if isinstance(kind, str) else None
    if found is None:
        raise LSR1Error(f"unknown problem kind {kind!r}; known kinds are {sorted(kinds())}")
    return found


def kind_of_config(cfg) -> ProblemKind:
    """The kind whose config class ``cfg`` is an instance of; ``LSR1Error`` for anything else."""
    for p in kinds().values():
        if type(cfg) is p.config_class:
            return p
    names = " or ".join(p.config_class.__name__ for p in kinds().values())
    raise LSR1Error(f"start() needs a validated {names} (see lsr1_core.meta.preset, lsr1_core.hmr.presets.hmr_preset; "
                    f"got {type(cfg).__name__})")


def kind_of_dict(d: dict) -> str:
    """The kind a config.json object names. A recorded ``"problem"`` that is a registered kind wins; a file
    without one (written before kinds were recorded) is inferred once, here, from ``LEGACY_MARKERS``;
    a recorded name that is not registered is returned as is (reading it then fails with its name)."""
    recorded = d.get(KIND_KEY)
    if isinstance(recorded, str):
        return recorded
    for key, kind in LEGACY_MARKERS:
        if key in d:
            return kind
    return DEFAULT_KIND


def display_kind(d: dict) -> str:
    """:func:`kind_of_dict` for listings: a kind that is not registered reads as the default (the page and
    the CLI never fail on a damaged config.json; reading the config reports it)."""
    kind = kind_of_dict(d)
    return kind if kind in kinds() else DEFAULT_KIND


def config_to_dict(cfg) -> dict:
    """config.json's object for ``cfg``: its kind first, then its fields."""
    return {KIND_KEY: kind_of_config(cfg).kind, **cfg.to_dict()}


class _Stripped:
    """A ``config_class`` for ``Trainer.resume``: the kind's class, reading config.json without the kind key."""

    def __init__(self, config_class: type):
        self.config_class = config_class

    def from_dict(self, d):
        if isinstance(d, dict):
            d = {k: v for k, v in d.items() if k != KIND_KEY}
        return self.config_class.from_dict(d)


def config_from_dict(d: dict):
    """The validated config of a config.json object (its kind's class; the kind key is not a field)."""
    return _Stripped(get(kind_of_dict(d)).config_class).from_dict(d)


def run_kind(run_dir: str | Path) -> ProblemKind:
    """The kind of a run directory's config.json (recorded, or inferred for old runs); ``LSR1Error`` (the
    config reader's message) when config.json is missing, corrupted or of an unknown kind."""
    cfg_path = Path(run_dir) / "config.json"
    try:
        d = json.loads(read_regular_file(cfg_path, MAX_RUN_JSON_BYTES).decode())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        d = None
    if not isinstance(d, dict):
        _read_typed_config(run_dir, _Raw)  # raises the reader's message (missing, unreadable, not an object)
        raise LSR1Error(f"{cfg_path} changed while it was read; try again")
    try:
        return get(kind_of_dict(d))
    except LSR1Error as e:
        raise LSR1Error(f"{cfg_path} is not a valid training config: {e}") from None


def read_run_config(run_dir: str | Path):
    """A run directory's validated config, of its recorded (or, for old runs, inferred) kind; ``LSR1Error``
    (never the defaults) when config.json is missing, corrupted, invalid or of an unknown kind."""
    return _read_typed_config(run_dir, _Stripped(run_kind(run_dir).config_class))


def trainer_config_class(kind: ProblemKind):
    """What ``Trainer.resume(..., config_class=)`` needs to read a config.json that records its kind."""
    return _Stripped(kind.config_class)


def resume_trainer(run_dir: str | Path, *, log=None) -> Trainer:
    """The core Trainer of a run directory of any kind, at its latest checkpoint (or at the start)."""
    kind = run_kind(run_dir)
    return Trainer.resume(run_dir, problem=kind.problem, config_class=_Stripped(kind.config_class), log=log)


class _Raw:
    """A ``config_class`` that returns config.json's object as it is (for its kind)."""

    from_dict = staticmethod(lambda d: d)


def preset_kind(name: str) -> ProblemKind:
    """The kind that has a preset named ``name``; ``LSR1Error`` listing every preset otherwise."""
    for p in kinds().values():
        if name in p.presets:
            return p
    names = sorted(n for p in kinds().values() for n in p.presets)
    raise LSR1Error(f"unknown preset {name!r}; choose one of {names}")


def preset_config(name: str, overrides: dict | None = None):
    """A run's validated config from a preset name of any registered kind."""
    return preset_kind(name).config(name, overrides)


register(ProblemKind(kind="lsr1", label="L-SR1", config_class=TrainConfig, problem=LSR1Problem, presets=PRESETS,
                     make_config=preset, run_name=lambda cfg: cfg.task))
