"""Fitting models for HMR: a trainable initializer, LGD's update module, L-SR1 update modules,
and classical fitting (Adam, L-BFGS) from the same initializer.

Inner objective (paper Eq. 12): f(θ, β) = ‖w ⊙ (x̂(θ, β) − x)‖₁ / (2 Σ w) per sample, with x the
observed keypoints and x̂ the model's projected keypoints, both normalised LGD-style by the bounding
box of the visible joints, and w the confidences. Dividing by the visible coordinates' weight
makes f the mean absolute 2-D error in box units (0.01 = 1% of the body's size): with the plain
sum the gradients are ~20× larger and γ1 = 0.1 steps overshoot by far (measured). ``HMRObjective`` is an ordinary
:class:`lsr1_core.objectives.Objective` over z = [θ, β], so every core solver runs on it.

Methods (all start from the initializer's estimate, step k = 0):
  * LGD (Song et al. 2020): θ ← θ + 0.1·Uθ([x, θ, β, ∇θf, ∇βf]), β likewise with Uβ; U are LGD's
    1024-wide residual MLPs. LGD feeds the shape update the pose features; we feed both updates
    the full state (keypoints, θ, β and both gradients), a 12-number difference in input width.
  * L-SR1: one L-SR1 network for the pose coordinates and one for the shape coordinates (as the
    authors did), each with its own buffer and state (Algorithm 1), stepping together: both
    propose, the objective is evaluated once at the joint proposal, both advance.
  * L-SR1, scale-free form (``lsr1: LSR1Config.qn(...)``): one qn model on z = [θ, β] as a single
    vector, so that one H = γI + Σ v vᵀ carries the curvature between pose and shape; the first step's
    curvature probe, the Armijo safeguard (its training step's halvings, ``TRAIN_MAX_HALVINGS``) and the learned corrections/step sizes
    of :mod:`lsr1_core.learned.qn`. Its secant term is the relative one (the learned
    departure from SR1, mean(u²), which equals ‖p − Hq‖²/‖p‖² wherever the pair is used), since pose and
    shape steps differ in scale.
  * Adam / L-BFGS: the core solvers on ``HMRObjective`` (classical fitting, no learning).
Gradients of f fed to the learned updates are detached (first-order meta-gradient), as LGD and
the L-SR1 authors do.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import CheckpointError, LSR1Error
from ..learned.model import LSR1Config, LSR1Net
from ..learned.rules import rule_for
from ..learned.secant import secant_penalty
from ..learned.solver import inference_mode
from ..objectives.base import Objective
from ..solvers import make_solver, run
from .body import BodyModel
from .data import CameraConfig, check_observation, normalise_keypoints, project, to_camera
from ..checkpoints import git_commit, load_tensors_and_card, save_tensors_and_card

METHODS = ("lgd", "lsr1")


class HMRObjective(Objective):
    """Eq. 12 over z = [θ, β] for one batch of observations (one problem per row)."""

    name = "hmr_reprojection"

    def __init__(self, body: BodyModel, kp2d: torch.Tensor, conf: torch.Tensor, camera: CameraConfig):
        check_observation(kp2d, conf, len(body.keypoint_names))
        self.body, self.camera = body, camera
        self.conf = conf
        self.target = normalise_keypoints(kp2d, conf)
        self.dim = body.pose_dim + body.shape_dim
        self.batch = kp2d.shape[0]

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z[:, :self.body.pose_dim], z[:, self.body.pose_dim:]

    def keypoints3d(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return self.body.keypoints(pose, shape)

    def predict2d(self, pose: torch.Tensor, shape: torch.Tensor, kp3d: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised projected keypoints (B, 18, 2), normalised over the observed-visible joints."""
        kp3d = self.keypoints3d(pose, shape) if kp3d is None else kp3d
        uv = project(to_camera(kp3d, self.camera, self.body), self.camera)
        return normalise_keypoints(uv, self.conf)

    def value_pose_shape(self, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        x = self.predict2d(pose, shape)
        err = (self.conf.unsqueeze(-1) * (x - self.target)).abs().sum((1, 2))
        return err / (2 * self.conf.sum(1))

    def value(self, z: torch.Tensor) -> torch.Tensor:
        return self.value_pose_shape(*self.split(z))

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First-order, like :meth:`value_and_grads`: where z carries a graph, f keeps it (for the
        meta-loss) and ∇f is detached; otherwise both are plain values (the core solvers' case)."""
        create = z.requires_grad
        with torch.enable_grad():
            zz = z if create else z.detach().requires_grad_(True)
            f = self.value(zz)
            (g,) = torch.autograd.grad(f.sum(), zz, retain_graph=create)
        return (f if create else f.detach()), g

    def value_and_grads(self, pose: torch.Tensor, shape: torch.Tensor):
        """f (with graph, for the meta-loss) and detached ∇θf, ∇βf."""
        with torch.enable_grad():
            p = pose if pose.requires_grad else pose.detach().requires_grad_(True)
            s = shape if shape.requires_grad else shape.detach().requires_grad_(True)
            f = self.value_pose_shape(p, s)
            gp, gs = torch.autograd.grad(f.sum(), (p, s), retain_graph=True)
        return f, gp.detach(), gs.detach()


def lgd_mlp(d_in: int, d_out: int, width: int = 1024, dropout: float = 0.2) -> nn.Module:
    """LGD's MLP: Linear, BN, PReLU, Dropout, two residual blocks of [Linear, BN, PReLU,
    Dropout]×2 with a skip, then Linear(width, d_out) (initialised near zero)."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.PReLU(), nn.Dropout(dropout),
                                   nn.Linear(width, width), nn.BatchNorm1d(width), nn.PReLU(), nn.Dropout(dropout))

        def forward(self, x):
            return x + self.f(x)

    out = nn.Linear(width, d_out)
    nn.init.normal_(out.weight, std=1e-3)
    nn.init.zeros_(out.bias)
    return nn.Sequential(nn.Linear(d_in, width), nn.BatchNorm1d(width), nn.PReLU(), nn.Dropout(dropout),
                         Block(), Block(), out)


class Initializer(nn.Module):
    """2-D keypoints (normalised, 18×2) → initial (θ, β); LGD's two initializer MLPs."""

    def __init__(self, pose_dim: int, shape_dim: int, n_kp: int = 18, width: int = 1024, shape_mean: float = 0.5):
        super().__init__()
        self.pose = lgd_mlp(2 * n_kp, pose_dim, width)
        self.shape = lgd_mlp(2 * n_kp, shape_dim, width)
        self.register_buffer("shape_mean", torch.full((shape_dim,), shape_mean))

    def forward(self, x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x2d.flatten(1)
        return self.pose(h), self.shape_mean + self.shape(h)


@dataclass
class HMRModelConfig(ConfigMixin):
    config_name = "HMR model config"

    method: str = "lsr1"  # "lgd" or "lsr1"
    width: int = 1024  # LGD MLP width (initializer, LGD update)
    lgd_step: float = 0.1
    lsr1: dict = field(default_factory=lambda: {"memory": 4, "gamma1": 0.1, "gamma2": 0.001})

    def __post_init__(self):
        if self.method not in METHODS:
            raise LSR1Error(f"unknown HMR method {self.method!r}; choose one of {METHODS}")
        if not isinstance(self.width, int) or self.width < 8:
            raise LSR1Error(f"width must be an integer >= 8, got {self.width!r}")


@dataclass
class FitResult:
    """Estimates at steps 0 (initializer) … K and the per-step secant terms (L-SR1 only)."""
    poses: list[torch.Tensor]
    shapes: list[torch.Tensor]
    f: list[torch.Tensor]  # (B,) reprojection objective at each estimate
    secant: list[torch.Tensor] = field(default_factory=list)  # (B,) ‖p − B̃q‖², steps 1..K
    secant_relsq: list[torch.Tensor] = field(default_factory=list)  # (B,) ‖p − B̃q‖² / ‖p‖²
    secant_rel: list[torch.Tensor] = field(default_factory=list)
    departure: list[torch.Tensor] = field(default_factory=list)  # qn form: (B,) mean(u²), the learned departure from SR1
    evals: list[int] = field(default_factory=list)  # qn form: objective evaluations per step (probe counted)
    safeguard: list[torch.Tensor] = field(default_factory=list)  # qn form: (B,) bool, the step was changed


class HMRModel(nn.Module):
    """Initializer + update module(s). ``model.fit(objective, steps)`` runs the inner loop."""

    def __init__(self, body_signature: dict, config: HMRModelConfig):
        super().__init__()
        self.config = config
        self.body_signature = dict(body_signature)
        P, S = int(body_signature["pose_dim"]), int(body_signature["shape_dim"])
        K = len(body_signature.get("keypoints", range(18)))
        self.pose_dim, self.shape_dim = P, S
        self.initializer = Initializer(P, S, K, config.width)
        if config.method == "lgd":
            d_in = 2 * K + 2 * (P + S)
            self.update_pose = lgd_mlp(d_in, P, config.width)
            self.update_shape = lgd_mlp(d_in, S, config.width)
            return
        cfg = LSR1Config(**config.lsr1)
        if rule_for(cfg).scale_free:  # one network on z = [θ, β]: one H carries pose and shape together
            self.lsr1 = LSR1Net(cfg)
        else:  # scales differ between the blocks: one network each, as the authors did
            self.lsr1_pose = LSR1Net(cfg)
            self.lsr1_shape = LSR1Net(cfg)

    def update_nets(self) -> list[LSR1Net]:
        """The L-SR1 networks of the update stage: one on z = [θ, β], or one for pose and one for shape."""
        return [m for m in (getattr(self, n, None) for n in ("lsr1", "lsr1_pose", "lsr1_shape")) if m is not None]

    @property
    def rule(self):
        """The update rule of the L-SR1 networks (None for LGD)."""
        nets = self.update_nets()
        return rule_for(nets[0].config) if nets else None

    @property
    def is_qn(self) -> bool:
        """An L-SR1 model of the scale-free form (one network on z = [θ, β])."""
        return hasattr(self, "lsr1") and isinstance(self.lsr1, LSR1Net)

    def num_parameters(self, part: str | None = None) -> int:
        mods = {"initializer": [self.initializer],
                "update": [m for n, m in self.named_children() if n != "initializer"]}
        sel = [self] if part is None else mods[part]
        return sum(p.numel() for m in sel for p in m.parameters())

    @contextmanager
    def inference(self, rows: int | None = None):
        """Evaluation behaviour: dropout off, BatchNorm on running statistics, except the L-SR1
        nets, which follow their config (the authors evaluate them on batch statistics)."""
        was = self.training
        self.eval()
        try:
            with ExitStack() as stack:
                for net in self.update_nets():
                    stack.enter_context(inference_mode(net, rows))
                yield self
        finally:
            self.train(was)

    def initial(self, objective: HMRObjective) -> tuple[torch.Tensor, torch.Tensor]:
        return self.initializer(objective.target)

    def fit(self, objective: HMRObjective, steps: int) -> FitResult:
        pose, shape = self.initial(objective)
        f, gp, gs = objective.value_and_grads(pose, shape)
        res = FitResult([pose], [shape], [f])
        if self.config.method == "lgd":
            x2d = objective.target.flatten(1)
            for _ in range(steps):
                h = torch.cat([x2d, pose, shape, gp, gs], 1)
                pose = pose + self.config.lgd_step * self.update_pose(h)
                shape = shape + self.config.lgd_step * self.update_shape(h)
                f, gp, gs = objective.value_and_grads(pose, shape)
                res.poses.append(pose), res.shapes.append(shape), res.f.append(f)
            return res
        rule = self.rule
        if self.is_qn:
            return self._fit_joint(rule, objective, pose, shape, f, torch.cat([gp, gs], 1), res, steps)
        # one network per block, stepping together: both propose, the objective is evaluated once at the joint
        # proposal, both advance (the rule's training step, split around its one evaluation)
        sp, ss = rule.init(self.lsr1_pose, objective, pose, f, gp), rule.init(self.lsr1_shape, objective, shape, f, gs)
        for _ in range(steps):
            pp, ps = rule.propose(self.lsr1_pose, sp), rule.propose(self.lsr1_shape, ss)
            f, gp, gs = objective.value_and_grads(pp.x, ps.x)
            sp, op = rule.advance(self.lsr1_pose, sp, pp.x, f, gp, pp.d, pp.W, pp.operator)
            ss, os_ = rule.advance(self.lsr1_shape, ss, ps.x, f, gs, ps.d, ps.W, ps.operator)
            res.poses.append(pp.x), res.shapes.append(ps.x), res.f.append(f)
            # secant residual of the pose and shape blocks together (Eq. 8)
            res.secant.append(op.secant + os_.secant)
            res.secant_relsq.append(secant_penalty(op.secant + os_.secant, (sp.p, ss.p), "relative"))
            res.secant_rel.append(0.5 * (op.secant_rel + os_.secant_rel))
        return res

    def _fit_joint(self, rule, objective: HMRObjective, pose, shape, f, g, res: FitResult, steps: int) -> FitResult:
        """One network on z = [θ, β]: the rule's training step (safeguarded, gradients detached)."""
        state = rule.init(self.lsr1, objective, torch.cat([pose, shape], 1), f, g)
        for _ in range(steps):
            state, out = rule.step(self.lsr1, state, objective, differentiable=True, detach_gradient=True)
            p_k, s_k = objective.split(state.x)
            res.poses.append(p_k), res.shapes.append(s_k), res.f.append(state.f)
            res.secant.append(out.secant)
            res.secant_relsq.append(out.secant_rel_sq)
            res.secant_rel.append(out.secant_rel)
            res.departure.append(out.departure)
            res.evals.append(out.evals)
            res.safeguard.append(out.safeguard)
        return res


def classical_fit(method: str, objective: HMRObjective, pose0: torch.Tensor, shape0: torch.Tensor, steps: int,
                  **kwargs) -> FitResult:
    """Adam, L-BFGS or the untrained qn form of L-SR1 (core solvers) on Eq. 12 from the given start; returns
    every iterate. ``"lsr1_qn"`` is the scale-free form's shipped rules with no learned weights (u = 0, α = 1:
    positive semi-definite SR1 with the two-scale H₀, the BFGS fallback and the Armijo safeguard), the form
    ``LSR1Optimizer`` uses by default; it needs no HMR training, so it sits beside the classical fits."""
    if method == "lsr1_qn":
        from ..learned import LSR1Config, LSR1Net, LSR1Solver
        solver = LSR1Solver(model=LSR1Net(LSR1Config.qn(memory=kwargs.get("memory", LSR1Config.memory))))
    elif method == "adam":
        solver = make_solver("adam", lr=kwargs.get("lr", 0.02))
    elif method == "lbfgs":
        size = {"history": kwargs["history"]} if "history" in kwargs else {"memory": kwargs.get("memory", 8)}
        solver = make_solver("lbfgs", **size, line_search="strong_wolfe")  # history=: deprecated, warns there
    else:
        raise LSR1Error(f"unknown fitting method {method!r}; choose 'adam', 'lbfgs' or 'lsr1_qn'")
    z0 = torch.cat([pose0, shape0], 1).detach()
    with torch.no_grad():
        tr = run(solver, objective, z0, steps)
    P = objective.body.pose_dim
    xs = [tr.x[k] for k in range(tr.x.shape[0])]
    return FitResult([x[:, :P] for x in xs], [x[:, P:] for x in xs], [tr.f[k] for k in range(tr.f.shape[0])])


# --- checkpoints -------------------------------------------------------------------------------
def save_hmr_model(path, model: HMRModel, versioned: bool = False, **card) -> None:
    """safetensors + JSON card (kind "hmr"): config, body signature and whatever ``card`` adds."""
    meta = {"kind": "hmr", "config": model.config.to_dict(), "body": model.body_signature,
            "num_parameters": {"total": model.num_parameters(), "initializer": model.num_parameters("initializer"),
                               "update": model.num_parameters("update")},
            "torch_version": torch.__version__, "commit": git_commit()}
    meta.update(card)
    save_tensors_and_card(path, model.state_dict(), meta, versioned=versioned)


def load_hmr_model(path, body: BodyModel | None = None, device="cpu") -> tuple[HMRModel, dict]:
    """Load an HMR model; with ``body`` given, refuse a checkpoint made for another body model."""
    tensors, card = load_tensors_and_card(path, kind="hmr")
    if body is not None:
        body.check_signature(card.get("body", {}), what=f"checkpoint {path}")
    try:
        model = HMRModel(card["body"], HMRModelConfig.from_dict(card["config"]))
    except (KeyError, TypeError, LSR1Error) as e:
        raise CheckpointError(f"model card of {path} is invalid: {e}") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model its card describes: {e}") from None
    return model.to(device), card
