"""Problem families for learning and judging the qn form at equal evaluations (issue 22).

Each :class:`Family` draws batches of problems with a seed: the objective, starts and f* per problem, rescaled as
the qn presets do (f̃(y) = c·f(y/s), log10 c, log10 s ~ U(±3)) by :func:`draw`. The same seed gives the same
problems. Seeds are split by purpose (``TUNE_BASE``, ``HELD_BASE``, ``VAL_BASE``, ``TRAIN_BASE``): training draws
never meet validation or held-out ones. Used by the headroom report, the scalar meta-training of
:mod:`lsr1_core.meta.scalars`, the shipped cards' held-out comparisons and the Meta-training page.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..learned import LSR1Solver
from ..learned.model import LSR1Config, LSR1Net
from ..learned.rules import rule_for
from ..objectives import Rastrigin, Rosenbrock, family_starts, random_quadratics
from ..objectives.base import Objective, check_batch
from ..objectives.logistic import logistic_family
from ..objectives.transforms import Scaled
from ..solvers import make_solver
from .budget import run_budget

CARD = "pretrained/qn_quadratic"
MEMORY = 8
SCALE_RANGE = 3.0
FLOOR = 1e-12
TUNE_BASE, HELD_BASE, VAL_BASE, TRAIN_BASE = 10_000, 20_000, 30_000, 1_000_000
JUDGE_BASE = 60_000  # the reports' judge draws: no training, validation or shipping decision uses them
# another split of the same family: a held-out comparison there is not a transfer test
SPLITS = {"hmr": ("hmr_frames",)}

# --------------------------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------------------------

class LowRankRosenbrock(Objective):
    """Rosenbrock's valley in a random K-dimensional subspace of R^N, a unit quadratic across it (per row):

    f(x) = Σ_{i<K} [100 (z_{i+1} − z_i²)² + (1 − z_i)²] + ½‖x − V z‖²,  z = Vᵀx,  V (N × K) orthonormal.

    Non-convex and ill-conditioned (curvature up to ~10³ along the valley against 1 across) with K ≪ N: the
    structure a memory of a few pairs can capture. f* = 0 at x = V·1."""

    def __init__(self, V: torch.Tensor):
        self.V = V
        self.batch, self.dim, self.k = V.shape[0], V.shape[1], V.shape[2]
        self.name = f"lowrank_rosenbrock_n{self.dim}_k{self.k}"

    def check(self, x):
        check_batch(x, self.dim, self.batch)

    def value(self, x):
        self.check(x)
        V = self.V.to(x)
        z = torch.einsum("bnk,bn->bk", V, x)
        rest = x - torch.einsum("bnk,bk->bn", V, z)
        ros = (100 * (z[:, 1:] - z[:, :-1] ** 2) ** 2 + (1 - z[:, :-1]) ** 2).sum(-1)
        return ros + 0.5 * (rest * rest).sum(-1)

    def minimizer(self):
        return torch.einsum("bnk,bk->bn", self.V, torch.ones(self.batch, self.k, dtype=self.V.dtype))

    def min_value(self):
        return torch.zeros(self.batch, dtype=self.V.dtype)


def lowrank_rosenbrock_family(batch: int, generator: torch.Generator, n: int = 100, k: int = 8):
    G = torch.randn(batch, n, k, generator=generator, dtype=torch.float64)
    V, R = torch.linalg.qr(G)
    V = V * torch.sign(torch.diagonal(R, dim1=1, dim2=2)).unsqueeze(1)
    z0 = 4 * torch.rand(batch, k, generator=generator, dtype=torch.float64) - 2
    bulk = torch.randn(batch, n, generator=generator, dtype=torch.float64)
    bulk = bulk - torch.einsum("bnk,bk->bn", V, torch.einsum("bnk,bn->bk", V, bulk))
    x0 = torch.einsum("bnk,bk->bn", V, z0) + bulk
    obj = LowRankRosenbrock(V)
    return obj, x0, obj.min_value()


class FullBatchDigits(Objective):
    """The LODO suite's digits MLP (64 → 32 → 10, tanh, cross-entropy) on its whole training split plus
    (λ/2)‖x‖², λ = 10⁻³: a deterministic objective over the flat parameters, one network per row. Without the
    regulariser the network separates its training set within ~50 evaluations and the loss then falls
    geometrically towards its infimum 0 (measured: 10⁻¹⁸ at 128 evaluations), which scores how fast a method
    scales the weights up, not how it optimises; with it the minimum is attained. f* is estimated per problem by
    a long L-BFGS run (memory 20, strong Wolfe, 1 500 evaluations) from the same start."""

    def __init__(self, seed: int = 0, hidden: int = 32, weight_decay: float = 1e-3):
        from ..objectives.lodo_tasks import DigitsMLP

        self.mlp = DigitsMLP(hidden=hidden, seed=seed)
        self.dim, self.batch = self.mlp.dim, None
        self.lam = weight_decay
        self.name = "digits_mlp_full"

    def value(self, x):
        return self.mlp._loss(x, self.mlp.X_train, self.mlp.y_train) + 0.5 * self.lam * (x * x).sum(-1)


REFERENCE_EVALS = 1500


def reference_fstar(obj, x0, evals: int = REFERENCE_EVALS) -> torch.Tensor:
    """f* estimate: the lowest value of a long L-BFGS run (memory 20, strong Wolfe) from x0."""
    r = run_budget(make_solver("lbfgs", memory=20, line_search="strong_wolfe"), obj, x0, evals)
    f = torch.where(torch.isfinite(r.f), r.f, torch.full_like(r.f, float("inf")))
    return f.min(0).values


def digits_family(batch: int, generator: torch.Generator):
    split = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
    init = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
    obj = FullBatchDigits(seed=split)
    x0 = obj.mlp.init_params(batch, seed=init)
    return obj, x0, reference_fstar(obj, x0)


_HMR: dict = {}
HMR_REFERENCE_EVALS = 200


FRAME_BLOCK, FRAME_HELD_EVERY, FRAME_GAP = 30, 5, 5


def frame_split(names) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) frame masks of the training clips for the frame-level split: each clip is cut into
    blocks of ``FRAME_BLOCK`` frames, every ``FRAME_HELD_EVERY``-th block is held out, and no training frame lies
    within ``FRAME_GAP`` frames of a held-out one (the temporal gap: neighbouring frames of a clip are nearly
    the same pose)."""
    names = np.asarray(names)
    held = np.zeros(len(names), bool)
    train = np.zeros(len(names), bool)
    for clip in dict.fromkeys(names.tolist()):
        m = np.flatnonzero(names == clip)
        i = np.arange(len(m))
        h = (i // FRAME_BLOCK) % FRAME_HELD_EVERY == FRAME_HELD_EVERY - 1
        near = np.convolve(h.astype(float), np.ones(2 * FRAME_GAP + 1), mode="same") > 0
        held[m], train[m] = h, ~near
    return train, held


def _hmr_poses(split: str) -> np.ndarray:
    """The pose pool of an HMR draw: "test" — the held-out clips (clip-level test); "train" — the training clips'
    frames outside the frame-level held-out blocks and their gaps; "frames" — those held-out blocks."""
    from ..hmr.mocap import mocap_poses

    if split == "test":
        return mocap_poses("test")[0]
    poses, names = mocap_poses("train")
    train, held = frame_split(names)
    return poses[train if split == "train" else held]


def _hmr_problems(batch: int, generator: torch.Generator, split: str):
    from ..hmr import CameraConfig, HMRObjective, load_pretrained
    from ..hmr.data import SampleConfig, make_batch
    from ..hmr.anny_body import AnnyBody

    if "body" not in _HMR:
        _HMR["body"] = AnnyBody()
        _HMR["init"] = load_pretrained(_HMR["body"], names=["lsr1"])["lsr1"]
    body, init = _HMR["body"], _HMR["init"]
    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
    gen = torch.Generator().manual_seed(seed)
    if split == "test":  # exactly lsr1_core.hmr.test_set's draw, as the headroom report made it
        from ..hmr import test_set

        data = test_set(body, n=batch, seed=seed)
    else:
        pool = torch.from_numpy(np.ascontiguousarray(_hmr_poses(split)))
        idx = torch.randperm(len(pool), generator=gen)[:batch]
        data = make_batch(body, pool[idx], body.sample_shape(len(idx), gen), gen, CameraConfig(),
                          SampleConfig(noise=0.01))
    obj = HMRObjective(body, data.kp2d, data.conf, CameraConfig())
    with torch.no_grad(), init.inference(rows=batch):
        p0, s0 = init.initial(obj)
    x0 = torch.cat([p0, s0], 1).detach()
    refs = [run_budget(qn_solver(), obj, x0, HMR_REFERENCE_EVALS).f,
            run_budget(make_solver("lbfgs", memory=MEMORY, line_search="strong_wolfe"), obj, x0,
                       HMR_REFERENCE_EVALS).f]
    f = torch.cat(refs, 0)
    fstar = torch.where(torch.isfinite(f), f, torch.full_like(f, float("inf"))).min(0).values
    return obj, x0, fstar.to(torch.float64)


def hmr_family(batch: int, generator: torch.Generator):
    """Human mesh recovery, clip-level test: ``batch`` frames of the held-out test clips (lsr1_core.hmr.test_set
    with a seed drawn from ``generator``: new frames, shapes, global rotations, dropped joints and 2-D noise), the
    Anny body model, started from the shipped initializer (the one LGD and L-SR1 share). f* per problem: the
    lowest value of a long L-BFGS and a long untrained-qn run (200 evaluations each) from the same start."""
    return _hmr_problems(batch, generator, "test")


def hmr_train_family(batch: int, generator: torch.Generator):
    """Mesh recovery's training and validation draws: frames of the training clips outside the frame-level
    held-out blocks (:func:`frame_split`), with the test set's noise and drop rate."""
    return _hmr_problems(batch, generator, "train")


def hmr_frames_family(batch: int, generator: torch.Generator):
    """Mesh recovery's frame-level test: the held-out blocks of the training clips (motions seen in training,
    frames not), beside the clip-level test of :func:`hmr_family` (motions never seen)."""
    return _hmr_problems(batch, generator, "frames")


def _quadratics(n):
    def sample(batch, generator):
        q, x0 = random_quadratics(n, batch, generator=generator, max_cond=None)
        return q, x0, q.value(q.minimizer()).detach()
    return sample


def _analytic(kind, n):
    def sample(batch, generator):
        obj = Rosenbrock(n) if kind == "rosenbrock" else Rastrigin(n)
        return obj, family_starts(kind, n, batch, generator), torch.zeros(batch, dtype=torch.float64)
    return sample


def _least_squares(batch, generator):
    from ..objectives.glm import least_squares_family

    obj, x0 = least_squares_family(batch, generator)
    return obj, x0, obj.min_value()


def _softmax(batch, generator):
    from ..objectives.glm import softmax_family

    obj, x0 = softmax_family(batch, generator)
    return obj, x0, obj.min_value()


def _logistic(batch, generator):
    obj, x0 = logistic_family(batch, generator)
    return obj, x0, obj.min_value()


@dataclass
class Family:
    name: str
    title: str
    sample: Callable  # (batch, generator) -> (objective, x0, f* (B,))
    budgets: tuple = (16, 32, 64, 128)
    per_seed: int = 8
    preset: str | None = None
    note: str = ""
    floor: float = FLOOR  # gaps below floor·(f₀ − f*) count as the floor
    max_seeds: int | None = None  # cap on held-out seeds (expensive families)
    default: bool = True  # run without --families
    # where training and validation draws come from, when not from ``sample`` (mesh recovery: the training clips)
    train_sample: Callable | None = None


FAMILIES = {
    "quadratic_n2": Family("quadratic_n2", "random quadratics, N = 2 (preset qn_quadratic)", _quadratics(2),
                           budgets=(3, 4, 5, 6, 8), per_seed=16, preset="qn_quadratic",
                           note="C.2.1's AᵀA without the condition filter, as the preset trains. SR1 is exact in "
                                "about three steps, so the budgets are small."),
    "quadratic_n100": Family("quadratic_n100", "random quadratics, N = 100 (preset qn_profile_quadratic)",
                             _quadratics(100), preset="qn_profile_quadratic",
                             note="AᵀA with A ~ N(0, 1)^{100×100}, unfiltered (condition numbers ~10⁴–10⁷)."),
    "rosenbrock_n100": Family("rosenbrock_n100", "Rosenbrock, N = 100 (preset qn_profile_rosenbrock)",
                              _analytic("rosenbrock", 100), preset="qn_profile_rosenbrock",
                              note="starts U[−2, 2]¹⁰⁰, f* = 0 (the global minimum; some starts end in the local one)."),
    "rastrigin_n100": Family("rastrigin_n100", "Rastrigin, N = 100 (preset qn_profile_rastrigin)",
                             _analytic("rastrigin", 100), preset="qn_profile_rastrigin",
                             note="starts U[−5.12, 5.12]¹⁰⁰, f* = 0 (global; local methods stop in local minima)."),
    "lowrank_rosenbrock": Family("lowrank_rosenbrock", "Rosenbrock valley in a random 8-dim subspace of R¹⁰⁰",
                                 lowrank_rosenbrock_family,
                                 note="new (this file): non-convex, ill-conditioned, K = 8 ≪ N = 100; z₀ ~ U[−2, 2]⁸, "
                                      "the rest N(0, I); f* = 0."),
    "logistic": Family("logistic", "logistic regression on badly scaled data, N = 50, m = 200",
                       _logistic,
                       note="lsr1_core/objectives/logistic.py: per-problem data, feature scales 10^U(±1.5), "
                            "λ = 10⁻³, x₀ ~ N(0, I); f* by batched Newton to ‖∇f‖ ≈ 10⁻¹³."),
    "digits_mlp": Family("digits_mlp", "digits MLP 64–32–10 (LODO suite), full batch, weight decay 10⁻³",
                         digits_family, per_seed=4, floor=1e-6,
                         note="the LODO suite's task on its whole training split (deterministic), N = 2 410, plus "
                              "(10⁻³/2)‖x‖² (without it the loss falls geometrically to its infimum 0 once the "
                              "training set is separated, which measures weight growth, not optimisation); f* "
                              "estimated per problem by L-BFGS (memory 20) with 1 500 evaluations, so gaps are "
                              "floored at 10⁻⁶ of the start's (the estimate's own accuracy is not known better; a "
                              "non-convex problem may also have methods end in other basins)."),
    "hmr": Family("hmr", "human mesh recovery (Anny body, 2-D keypoints), N = 60", hmr_family,
                  budgets=(4, 8, 16, 32), per_seed=8, floor=1e-3, max_seeds=2, train_sample=hmr_train_family,
                  note="test clips (lsr1_core.hmr.test_set with new seeds), z = [θ, β] from the shipped initializer; "
                       "the L1 reprojection objective in float32; f* = the best of 200-evaluation L-BFGS and qn "
                       "runs per problem, so gaps are floored at 10⁻³ of the start's (a method below the reference "
                       "scores the floor). At most 2 held-out seeds (its reference fits cost about a minute on one core); "
                       "the budgets cover the 4–15 steps HMR fits use."),
    # added after the headroom report (appended, so the other families' seeds are unchanged; not in its default run)
    "least_squares": Family("least_squares", "ridge regression on badly scaled data, N = 50, m = 200", _least_squares,
                            default=False,
                            note="lsr1_core/objectives/glm.py: per-problem data, feature scales 10^U(±1.5), "
                                 "λ = 10⁻³, x₀ ~ N(0, I); f* by a linear solve."),
    "softmax": Family("softmax", "softmax regression on badly scaled data, 5 classes × 20 features, m = 200",
                      _softmax, default=False,
                      note="lsr1_core/objectives/glm.py: per-problem data, feature scales 10^U(±1.5), λ = 10⁻³, "
                           "x₀ ~ N(0, I); f* by batched Newton to ‖∇f‖ ≈ 10⁻¹³."),
    "hmr_frames": Family("hmr_frames", "human mesh recovery, frame-level split (held-out frames of the training clips)",
                         hmr_frames_family, budgets=(4, 8, 16, 32), per_seed=8, floor=1e-3, max_seeds=2,
                         train_sample=hmr_train_family, default=False,
                         note="blocks of 30 frames, every 5th held out, no training frame within 5 frames of a "
                              "held-out one; the training and validation draws of both mesh-recovery families come "
                              "from the other frames of the training clips."),
}


_DRAWN: dict = {}


def draw(family: Family, seed: int, count: int | None = None):
    """Problems of one seed (cached: the same seed gives the same problems, f* is computed once): """
    key = (family.name, int(seed), count or family.per_seed)
    if key not in _DRAWN:
        if len(_DRAWN) > 64:
            _DRAWN.clear()
        _DRAWN[key] = _draw(family, seed, count)
    return _DRAWN[key]


def _draw(family: Family, seed: int, count: int | None = None):
    """Problems of one seed: (scaled objective, y0, f̃* (B,), base objective, x0, c (B,)). Scales as the qn
    presets: f̃(y) = c·f(y/s), log10 c, log10 s ~ U(±3)."""
    g = torch.Generator().manual_seed(int(seed))
    count = count or family.per_seed
    fitting = int(seed) >= TRAIN_BASE or VAL_BASE <= int(seed) < VAL_BASE + 10_000
    sample = family.train_sample if (fitting and family.train_sample is not None) else family.sample
    obj, x0, fstar = sample(count, g)
    c = 10 ** ((torch.rand(count, generator=g, dtype=torch.float64) * 2 - 1) * SCALE_RANGE)
    s = 10 ** ((torch.rand(count, generator=g, dtype=torch.float64) * 2 - 1) * SCALE_RANGE)
    return Scaled(obj, c, s), x0 * s.view(-1, 1), fstar * c, obj, x0, c


# --------------------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------------------

_CARD_CONFIG: LSR1Config | None = None


def card_config() -> LSR1Config:
    global _CARD_CONFIG
    if _CARD_CONFIG is None:
        _CARD_CONFIG = LSR1Solver(checkpoint=CARD).net.config
    return _CARD_CONFIG


def untrained_net(config: LSR1Config | None = None, hidden: int = 4, **changes) -> LSR1Net:
    """An untrained qn net (zero output heads: classical SR1 with the config's rules), ``hidden`` wide. Its
    iterates do not depend on the width: every output is exactly 0."""
    cfg = (config or card_config()).replace(hidden=hidden, memory=MEMORY, **changes)
    if not rule_for(cfg).scale_free:
        raise ValueError("the untrained start is a qn-form model")
    return LSR1Net(cfg).double()


def qn_solver(step_scale: float = 1.0, gamma_factor: float | None = None, config: LSR1Config | None = None):
    changes = {} if gamma_factor is None else {"gamma_factor": float(gamma_factor)}
    return LSR1Solver(model=untrained_net(config, **changes), step_scale=float(step_scale))
