"""Family-level scalars of the qn form, learned by antithetic ES on a meta-loss in evaluations (issue 22).

What is learned is a handful of smooth, per-family quantities of the qn form's configuration, not network weights:

* ``diag`` — the exponent β of the diagonal metric (H₀ = γ·D, D_i = (v_i/mean v)^(−β/2), v an average of g_i²;
  :mod:`lsr1_core.learned.qn`, point 6). 0 is the untrained start (H₀ = γI). A family whose coordinates carry
  their own scales (features of different units, parameters of different kinds) gains from it; one whose
  coordinates are exchangeable loses, so the value is the family's to learn.
* ``gamma`` — log of the H₀ scale factor over its default ½ (γ = factor·min pᵀq/qᵀq).
* ``decay`` — the logit of the metric's averaging decay relative to its default 0.9 (how long the metric
  remembers old gradients; only matters where diag ≠ 0).

θ is fitted by :func:`~lsr1_core.meta.budget.train_scalars` (Adam on antithetic, orthogonal ES gradients with
common random numbers) to the family's budget meta-loss — the mean over evaluation budgets of the best
normalised log10 gap reached within each budget, every evaluation counted per problem — on fresh training draws,
validated every iteration on fixed validation draws; the best validation iterate (iteration 0, the untrained start,
included) is kept. ES estimates the gradient of the Gaussian-smoothed loss, which exists although the safeguard's
branches make the loss piecewise (tests/test_meta_budget.py checks it against central differences).

A card ships as *trained* only when its held-out comparison (:func:`heldout`, seeds no run used) says it beats
its own untrained start; :func:`ship` refuses otherwise. The card's networks are the untrained ones (zero output
layers) and its card says so: what was trained is recorded under ``trained_scalars``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import LSR1Error
from ..learned import LSR1Solver
from ..learned.model import LSR1Config, LSR1Net
from ..learned.rules import rule_for
from ..solvers import make_solver
from .budget import budget_terms, run_budget, train_scalars
from .families import FAMILIES, HELD_BASE, JUDGE_BASE, MEMORY, TRAIN_BASE, VAL_BASE, Family, draw

HIDDEN = 4  # the shipped networks are untrained (zero output layers): their width changes no iterate


@dataclass(frozen=True)
class Scalar:
    field: str
    start: float
    bounds: tuple[float, float]
    to_value: Callable[[float], float]
    doc: str


SCALARS: dict[str, Scalar] = {
    "diag": Scalar("diag", 0.0, (-0.5, 3.0), lambda t: float(t), "exponent β of the diagonal metric (0: H₀ = γI)"),
    "gamma": Scalar("gamma_factor", 0.0, (-3.0, 3.0), lambda t: 0.5 * math.exp(t),
                    "log of the H₀ scale factor over ½"),
    "decay": Scalar("diag_decay", 0.0, (-4.0, 4.0), lambda t: 1 / (1 + math.exp(-(math.log(9.0) + t))),
                    "logit of the metric's averaging decay, relative to 0.9 (matters only where diag ≠ 0)"),
}


def check_params(params) -> tuple[str, ...]:
    params = tuple(params)
    bad = [p for p in params if p not in SCALARS]
    if not params or bad or len(set(params)) != len(params):
        raise LSR1Error(f"learnable scalars must be a non-empty list without repeats from {list(SCALARS)}; got "
                        f"{list(params)}")
    return params


def check_family(name) -> Family:
    if name not in FAMILIES:
        raise LSR1Error(f"unknown problem family {name!r}; the families are {list(FAMILIES)}")
    return FAMILIES[name]


def base_config() -> LSR1Config:
    """The untrained start every scalar card is measured against: the qn form's defaults, memory 8."""
    return LSR1Config.qn(memory=MEMORY, hidden=HIDDEN)


def config_for(theta, params, base: LSR1Config | None = None) -> LSR1Config:
    """The qn config with the learned scalars θ (in ES units, see :data:`SCALARS`) applied."""
    params = check_params(params)
    theta = [float(t) for t in theta]
    if len(theta) != len(params):
        raise LSR1Error(f"{len(theta)} values for the {len(params)} scalars {list(params)}")
    changes = {}
    for name, t in zip(params, theta):
        s = SCALARS[name]
        if not (math.isfinite(t) and s.bounds[0] - 1e-9 <= t <= s.bounds[1] + 1e-9):
            raise LSR1Error(f"{name} = {t} lies outside its range {s.bounds}")
        changes[s.field] = s.to_value(t)
    return (base or base_config()).replace(**changes)


def clamp(theta, params) -> list[float]:
    """θ with each coordinate kept in its scalar's bounds."""
    return [min(max(float(t), SCALARS[p].bounds[0]), SCALARS[p].bounds[1]) for p, t in zip(params, theta)]


def values_of(theta, params) -> dict[str, float]:
    """The config values θ stands for (field → value), as cards and metrics record them."""
    return {SCALARS[p].field: SCALARS[p].to_value(t) for p, t in zip(params, theta)}


def training_loss(family: Family, params, theta, seed: int, train_pool: int | None = None) -> float:
    """The budget meta-loss at (clamped) θ on the training draws of ES seed ``seed`` (``train_pool``: cycle through
    that many fixed training seeds instead)."""
    modulus = train_pool or 100_000_000
    return float(terms(family, config_for(clamp(theta, params), params), [TRAIN_BASE + int(seed) % modulus]).mean())


def validation_loss(family: Family, params, theta, seeds) -> float:
    """The budget meta-loss at (clamped) θ on fixed validation draws."""
    return float(terms(family, config_for(clamp(theta, params), params), seeds).mean())


def net_for(config: LSR1Config) -> LSR1Net:
    """A qn net with zero output layers (no learned weight takes part) in float64."""
    if not rule_for(config).scale_free:
        raise LSR1Error("scalar meta-training is for the qn form")
    return LSR1Net(config).double()


def problem_terms(method, obj, y0, fstar, budgets, floor) -> torch.Tensor:
    """(E, B) normalised log10 gaps at ``budgets`` of one batch of problems. ``method``: an LSR1Net, an LSR1Config
    (run with zero heads) or "lbfgs" (memory 8, strong Wolfe)."""
    if isinstance(method, str):
        if method != "lbfgs":
            raise LSR1Error(f"unknown reference method {method!r}")
        sol = make_solver("lbfgs", memory=MEMORY, line_search="strong_wolfe")
    else:
        sol = LSR1Solver(model=net_for(method) if isinstance(method, LSR1Config) else method)
    r = run_budget(sol, obj, y0, max(budgets))
    return budget_terms(r.f, r.cum, fstar, budgets, floor=floor, normalize=True, cumulative=True)[0]


def terms(family: Family, method, seeds) -> torch.Tensor:
    """(E, problems) normalised log10 gaps at the family's budgets over the given seeds (``method`` as in
    :func:`problem_terms`)."""
    out = []
    for sd in seeds:
        obj, y0, fstar, _base, _x0, _c = draw(family, sd)
        out.append(problem_terms(method, obj, y0, fstar, family.budgets, family.floor))
    return torch.cat(out, 1)


def paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean and 95 % t-interval of a − b per problem."""
    from scipy import stats

    d = (a - b).double().reshape(-1)
    n = d.numel()
    m = float(d.mean())
    if n < 2:
        return {"mean": m, "lo": float("nan"), "hi": float("nan"), "n": n}
    half = float(stats.t.ppf(0.975, n - 1)) * float(d.std(unbiased=True)) / math.sqrt(n)
    return {"mean": m, "lo": m - half, "hi": m + half, "n": n}


def seeds_of(family: Family, kind: str, count: int) -> list[int]:
    """Seeds of one purpose ("held", "val", "judge") for a family: disjoint across families and purposes."""
    base = {"held": HELD_BASE, "val": VAL_BASE, "judge": JUDGE_BASE}[kind]
    fi = list(FAMILIES).index(family.name)
    if family.max_seeds:
        count = min(count, family.max_seeds)
    return [base + 100 * fi + i for i in range(count)]


def heldout(family: Family | str, model, untrained, seeds=None, n_seeds: int = 4) -> dict:
    """Trained vs its untrained start vs L-BFGS at equal evaluations on held-out draws of ``family``.

    ``model`` and ``untrained``: LSR1Net or LSR1Config. Returns per budget the mean and 95 % interval of each and
    the paired differences, and the same for the mean over budgets."""
    family = check_family(family) if isinstance(family, str) else family
    seeds = list(seeds) if seeds is not None else seeds_of(family, "held", n_seeds)
    t0 = time.perf_counter()
    tr, un, lb = terms(family, model, seeds), terms(family, untrained, seeds), terms(family, "lbfgs", seeds)
    zero = torch.zeros_like(tr[0])
    rows = [{"budget": b, "trained": paired(tr[j], zero), "untrained": paired(un[j], zero),
             "lbfgs": paired(lb[j], zero), "trained_vs_untrained": paired(tr[j], un[j]),
             "trained_vs_lbfgs": paired(tr[j], lb[j])} for j, b in enumerate(family.budgets)]
    m = {k: v.mean(0) for k, v in (("trained", tr), ("untrained", un), ("lbfgs", lb))}
    return {"family": family.name, "seeds": seeds, "problems": int(tr.shape[1]), "budgets": list(family.budgets),
            "rows": rows, "mean_over_budgets": {"trained": paired(m["trained"], zero),
                                                "untrained": paired(m["untrained"], zero),
                                                "lbfgs": paired(m["lbfgs"], zero),
                                                "trained_vs_untrained": paired(m["trained"], m["untrained"]),
                                                "trained_vs_lbfgs": paired(m["trained"], m["lbfgs"])},
            "seconds": time.perf_counter() - t0}


def beats_untrained(h: dict) -> bool:
    """The shipping rule: over the mean of budgets the paired interval lies below 0, and at no budget is the trained
    model significantly worse than its untrained start."""
    mob = h["mean_over_budgets"]["trained_vs_untrained"]
    worse = any(r["trained_vs_untrained"]["lo"] > 0 for r in h["rows"])
    return mob["hi"] < 0 and not worse


def train(family: Family | str, params=("diag", "gamma"), *, iterations: int = 30, sigma: float = 0.15,
          pairs: int = 2, lr: float = 0.1, val_seeds: int = 2, seed: int = 0, train_pool: int | None = None,
          log: Callable[[str], None] | None = None) -> dict:
    """Fit the scalars ``params`` for ``family`` (see the module docstring). Training draws use seeds
    ``TRAIN_BASE + …`` from the ES generator, validation the family's fixed validation seeds; neither meets the
    held-out seeds. ``train_pool``: draw training problems from that many fixed training seeds (for families
    whose f* is expensive, e.g. mesh recovery's reference fits) instead of a fresh seed per ES pair. Returns the
    history and the best θ."""
    family = check_family(family) if isinstance(family, str) else family
    params = check_params(params)
    for name, v in (("sigma", sigma), ("lr", lr)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise LSR1Error(f"{name} must be a positive finite number, got {v!r}")
    for name, v in (("pairs", pairs), ("val_seeds", val_seeds)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LSR1Error(f"{name} must be a positive integer, got {v!r}")
    vseeds = seeds_of(family, "val", val_seeds)
    if train_pool is not None and (isinstance(train_pool, bool) or not isinstance(train_pool, int) or train_pool < 1):
        raise LSR1Error(f"train_pool must be a positive integer or None, got {train_pool!r}")

    def loss(theta, s):
        return training_loss(family, params, theta, s, train_pool)

    def val(theta):
        return validation_loss(family, params, theta, vseeds)

    lo = min(SCALARS[p].bounds[0] for p in params)
    hi = max(SCALARS[p].bounds[1] for p in params)
    hist = train_scalars(loss, val, [SCALARS[p].start for p in params], names=list(params), iterations=iterations,
                         sigma=sigma, pairs=pairs, lr=lr, seed=seed, bounds=(lo, hi), log=log)
    best = clamp(hist.best_theta, params)
    return {"family": family.name, "params": list(params), "theta": best, "values": values_of(best, params),
            "validation_seeds": vseeds, "training_seeds": f"{TRAIN_BASE} + ES draws (seed {seed})" + (
                f" modulo a pool of {train_pool}" if train_pool else ""), "train_pool": train_pool,
            "sigma": sigma, "pairs": pairs, "lr": lr, "iterations": iterations, "history": hist.to_dict()}


ANALYTIC = ("quadratic_n2", "quadratic_n100", "rosenbrock_n100", "rastrigin_n100", "lowrank_rosenbrock")
TEACHING_STEPS = 100


def teaching_check(config: LSR1Config, steps: int = TEACHING_STEPS) -> dict:
    """Each 2-D teaching function from its default start (the explorer's first view): the final f of ``config`` and of
    the untrained default after ``steps`` steps. ``ok``: the model ends at least as low as the default (or both
    within 1e-12 of each other or below 1e-12)."""
    from ..objectives import TEACHING_FUNCTIONS
    from ..solvers import run

    rows, ok = {}, True
    for fname, cls in TEACHING_FUNCTIONS.items():
        obj = cls()
        x0 = torch.tensor([list(cls.default_start)], dtype=torch.float64)
        a = run(LSR1Solver(model=net_for(config)), obj, x0, steps)
        b = run(LSR1Solver(model=net_for(base_config())), obj, x0, steps)
        fa, fb = float(a.f[-1]), float(b.f[-1])
        good = fa <= fb + 1e-12 or (fa < 1e-12 and fb < 1e-12)
        ok = ok and good
        rows[fname] = {"model_f": fa, "default_f": fb, "model_evals": int(a.evals.sum()),
                       "default_evals": int(b.evals.sum()), "ok": good}
    return {"steps": steps, "functions": rows, "ok": ok}


def what_is_learned(values: dict) -> str:
    """A scalar card's plain statement of what it learned (and that its networks did not)."""
    return ("the family-level scalars " + ", ".join(f"{k} = {v:.4g}" for k, v in values.items())
            + "; the networks are untrained (zero output layers: the update is classical SR1/BFGS in the learned "
              "metric)")


def ship(name: str, result: dict, held: dict, out_dir: Path, *, force: bool = False) -> Path:
    """Save the trained scalars as a card in ``out_dir`` (safetensors + JSON), or refuse where the held-out
    comparison does not show a gain over the untrained start (``force`` writes it as an untrained configuration)."""
    from ..learned.io import save_model

    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise LSR1Error(f"a card name is a bare file stem, got {name!r}")
    gain = beats_untrained(held)
    if not gain and not force:
        mob = held["mean_over_budgets"]["trained_vs_untrained"]
        raise LSR1Error(f"not shipping {name!r} as trained: on held-out {held['family']} problems it does not beat "
                        f"its untrained start (paired mean over budgets {mob['mean']:+.3f} "
                        f"[{mob['lo']:+.3f}, {mob['hi']:+.3f}]); nothing was written")
    config = config_for(result["theta"], result["params"])
    teach = teaching_check(config)
    if result["family"] in ANALYTIC and not teach["ok"] and not force:
        worse = [f for f, r in teach["functions"].items() if not r["ok"]]
        raise LSR1Error(f"not shipping {name!r}: an analytic card must solve the 2-D teaching functions from their "
                        f"default starts at least as well as the untrained default; it ends higher on {worse}")
    net = net_for(config)
    extra = {"trained_scalars": {k: result.get(k) for k in ("family", "params", "theta", "values", "validation_seeds",
                                                              "training_seeds", "train_pool", "sigma", "pairs", "lr",
                                                              "iterations")},
             "es_history": result["history"], "heldout": held, "teaching_check": teach, "best_at_iteration": result["history"]["best_iteration"],
             "name": name, "family": result["family"], "beats_untrained": gain,
             "iterations_run": result["iterations"],
             "what_is_learned": what_is_learned(result["values"]),
             "reproduce": f"python -m lsr1_core.pretrained train-scalars {name} --family {result['family']} "
                          f"--params {','.join(result['params'])} --iterations {result['iterations']}"
                          + (f" --train-pool {result['train_pool']}" if result.get("train_pool") else "")}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_model(out_dir / name, net, preset=None, iterations=result["history"]["best_iteration"], extra=extra)


def untrained_start(net: LSR1Net, card: dict | None = None) -> LSR1Config:
    """The untrained start a model is measured against: its config with every learned scalar back at its start
    value, run with zero output layers."""
    cfg = net.config
    changes = {s.field: s.to_value(s.start) for s in SCALARS.values()}
    return cfg.replace(**changes)


def family_of(card: dict | None) -> str | None:
    """The family a card was trained on: recorded by scalar training, or the family whose preset made it."""
    if not isinstance(card, dict):
        return None
    fam = card.get("family")
    if isinstance(fam, str) and fam in FAMILIES:
        return fam
    preset = card.get("preset")
    if isinstance(preset, str) and preset.endswith("_nosec"):  # the same task without the secant penalty
        preset = preset[: -len("_nosec")]
    for f in FAMILIES.values():
        if preset and f.preset == preset:
            return f.name
    return None
