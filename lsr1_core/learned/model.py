"""The L-SR1 model (Algorithm 1, Eq. 7-9): its config, network, operator and state. Its steps are the update
rules' (:mod:`lsr1_core.learned.rules`: the paper's in :mod:`~lsr1_core.learned.paper`, the scale-free form's in
:mod:`~lsr1_core.learned.qn`).

State per run (all (B, N) unless noted): the previous iterate x, step p, direction d,
gradient g and gradient change q, the buffer W (B, l, N) of the last L generated vectors.

One step k:
    f_k = E(x_{k-1}, p_{k-1}, d_{k-1}, g_{k-1}, q_{k-1})   per coordinate
    v_k = P(f_k),  α_k = γ1·exp(γ2·G(f_k))                 element-wise
    buffer ← last L of (buffer, v_k)
    d_k = B̃_k g_{k-1},  B̃_k = I + Σ v vᵀ                    (Eq. 7)
    x_k = x_{k-1} − α_k ⊙ d_k
    R_sec = ‖p_k − B̃_k q_k‖²                                (Eq. 8)

Where the paper and the authors' released code differ, :class:`LSR1Config` names each choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import LSR1Error, NonFiniteError, ShapeError, check_memory
from ..operators import CurvatureOperator
from .mlp import ElementwiseMLP
from .rules import LSR1StepOut, rule_for  # noqa: F401  (LSR1StepOut: importable from here as before)

FEATURES = ("x", "p", "d", "g", "q")
FORMS = ("paper", "qn")
# Inputs of the scale-free ("qn") form, all normalised per problem (lsr1_core.learned.qn): per-coordinate
# vectors divided by their own RMS (x-space ones by the step's RMS), and per-problem inner products broadcast.
QN_FEATURES = ("p", "Hq", "r", "g", "q", "d", "x", "cos_rq", "rel_r", "cos_pq", "cos_gd")
QN_DEFAULT_FEATURES = ("p", "Hq", "r", "g", "q", "d", "cos_rq", "rel_r", "cos_pq", "cos_gd")
SAFEGUARDS = (None, "armijo")
# The qn form's initial matrix: "envelope" H₀ = γI; "two_scale" adds (γ_BB − γ)(I − Π_Q), γ_BB = pᵀq/qᵀq of the
# newest pair and Π_Q the projector onto the stored gradient differences (lsr1_core.learned.qn).
H0_RULES = ("envelope", "two_scale", "bb")
UPDATES = ("sr1", "bfgs")  # the qn form's update of a stored pair (see LSR1Config)
# What the qn form does with a pair whose SR1 vector would make H indefinite: "skip" it (H ⪰ γI), or take the
# BFGS update from it where pᵀq > 0 ("bfgs": positive definite, and it can shrink H where SR1 would have).
FALLBACKS = ("skip", "bfgs")
# The qn form's default number of lengthening trials per step (learned.safeguard: only full steps along which f
# still falls steeply are lengthened, so most steps never use one).
EXTRAPOLATE_TRIALS = 10
DIAG_LIMIT = 4.0  # |β| of the diagonal metric; β = 2 already equalises a diagonal Hessian seen through g²
# How the safeguard shortens a step: halve it, or interpolate (a quadratic's minimiser within [0.1·t, 0.5·t]).
BACKTRACKS = ("halve", "interpolate", "wolfe")


# LSR1Config.qn_bfgs(): the rules it changes in the qn form (the app's qn_bfgs variant applies them to a card) and
# its memory (scipy L-BFGS-B's default maxcor)
QN_BFGS_RULES = {"update": "bfgs", "h0": "bb", "gamma_factor": 1.0, "backtrack": "wolfe", "extrapolate": 0,
                 "probe_pair": False}
QN_BFGS_MEMORY = 10


@dataclass
class LSR1Config(ConfigMixin):
    """Architecture and behaviour of an L-SR1 model. Validated on construction.

    Paper/code differences (see docs/design.md for the measurements behind the defaults):
      rescale_direction        authors' code rescales B̃g to ‖g‖ per problem (the learning-rate
                               generator then sets the whole step length); the paper does not.
      drop_identity_when_full  authors' code drops B0 = I once the buffer holds L vectors
                               (Algorithm 1 line 9); Eq. 7 keeps it. Dropping it loses the
                               guarantee that all eigenvalues are >= 1.
      bq_feature               authors' code feeds B̃_{k-1}q as the third feature instead of d.
      detach_features          authors' code detaches the encoder inputs (first-order meta-gradient).
      bn_train_at_eval         authors' code evaluates with BatchNorm in train mode (batch statistics).
      lr_clamp                 authors' code clamps learning rates at 10; None disables.

    ``form`` selects the update rule: ``"paper"`` (Algorithm 1 exactly, the default of old cards) or
    ``"qn"``, the scale-free quasi-Newton form of :mod:`lsr1_core.learned.qn` (build it with
    :meth:`LSR1Config.qn`). Fields used only by the qn form: ``step_bound`` (α = exp(b·tanh(α̃/b))),
    ``probe`` (relative length of the first step's curvature probe), ``probe_pair`` (the probe's pair also enters
    the memory as its first pair; False: the probe sets γ only), ``skip_eps`` (SR1's skip rule),
    ``gamma_factor`` (H₀ = γI with γ = gamma_factor·min pᵀq/qᵀq over the probe and all pairs), ``h0``
    ("envelope": H₀ = γI; "two_scale": plus (γ_BB − γ)(I − Π_Q) on the directions no stored pair measured;
    "bb": H₀ = γI with γ = gamma_factor·pᵀq/qᵀq of the newest pair with positive curvature, L-BFGS's scaling),
    ``update`` ("sr1": a stored pair enters as its positive SR1 vector, plus the learned correction, where that is
    usable, else as ``fallback`` says; "bfgs": every pair with curvature enters as a BFGS update and no SR1 vector
    is built — the classical L-BFGS update inside the qn form, whose learned parts are then the step sizes α and
    the family scalars; needs ``fallback="bfgs"``),
    ``fallback`` (a pair SR1 cannot use positively: "skip" it, or take its BFGS update, "bfgs"), ``restart``
    (where the safeguard finds no acceptable step, forget that problem's memory and probe γ again),
    ``extrapolate`` (how many trials may lengthen a full step along which f still falls steeply; 0: never),
    ``backtrack`` (the safeguard's line search: shorten a step by "halve", or "interpolate" by a quadratic in
    [0.1·t, 0.5·t]; or "wolfe", a strong-Wolfe search that also lengthens, with the Armijo search behind it —
    ``extrapolate`` is then not used, see :func:`~lsr1_core.learned.safeguard.wolfe_step`),
    ``diag`` (exponent β of a diagonal metric: H₀ = γ·D with D_i = (v_i/mean v)^(−β/2), v an exponential average of
    g_i² with decay ``diag_decay``; 0, the default, is H₀ = γI exactly as before; a family-level scalar that
    meta-training can learn, see :mod:`lsr1_core.learned.qn`).
    ``safeguard`` ("armijo" or None) works for both forms; ``batchnorm`` False removes BatchNorm.
    """

    config_name = "L-SR1 config"

    hidden: int = 128
    dropout: float = 0.0
    memory: int = 8
    gamma1: float = 0.4
    gamma2: float = 0.001
    features: tuple[str, ...] = FEATURES
    rescale_direction: bool = False
    drop_identity_when_full: bool = False
    bq_feature: bool = False
    detach_features: bool = True
    bn_train_at_eval: bool = True
    lr_clamp: float | None = 10.0
    form: str = "paper"
    batchnorm: bool = True
    safeguard: str | None = None
    step_bound: float = 3.0
    probe: float = 1e-3
    skip_eps: float = 1e-8
    gamma_factor: float = 0.5
    h0: str = "envelope"
    update: str = "sr1"
    fallback: str = "skip"
    restart: bool = False
    extrapolate: int = 0
    backtrack: str = "halve"
    probe_pair: bool = True
    diag: float = 0.0
    diag_decay: float = 0.9

    @classmethod
    def qn(cls, **changes) -> "LSR1Config":
        """The scale-free form's defaults: no BatchNorm, Armijo safeguard, normalised features, two-scale H₀,
        BFGS fallback, restart after a failed safeguard.

        (A card without ``h0``, ``fallback``, ``restart``, ``extrapolate`` or ``backtrack`` loads with the dataclass
        defaults "envelope", "skip", False, 0 and "halve", the rules it was made with.)"""
        base = dict(form="qn", batchnorm=False, safeguard="armijo", features=QN_DEFAULT_FEATURES,
                    bn_train_at_eval=False, lr_clamp=None, detach_features=True, h0="two_scale", fallback="bfgs",
                    restart=True, extrapolate=EXTRAPOLATE_TRIALS, backtrack="interpolate")
        base.update(changes)
        return cls(**base)

    @classmethod
    def qn_bfgs(cls, **changes) -> "LSR1Config":
        """The qn form with L-BFGS's update and scaling and a strong-Wolfe search (issue 23): every pair enters as a
        BFGS update (``update="bfgs"``), H₀ = γI with γ = pᵀq/qᵀq of the newest pair (``h0="bb"``, factor 1) and
        the line search is :func:`~lsr1_core.learned.safeguard.wolfe_step` (``backtrack="wolfe"``); the probe,
        the Armijo search behind the Wolfe one, the restart rule, the stopping rules, scale-freedom and the diagonal
        metric are the qn form's, except that the probe sets γ only (``probe_pair=False``: its pair, measured at
        1e-3·‖x‖, would describe curvature at a scale no step has taken, and on multi-modal functions it sent
        the second step into another basin; docs/design.md), and it keeps 10 pairs (scipy L-BFGS-B's default
        ``maxcor``; the SR1 form and the paper keep 8). Measured at equal evaluations against scipy and torch L-BFGS in
        docs/results_peers.md. Its learned parts are the step sizes α and the family scalars; the SR1 vectors (and
        so the learned corrections u) are off — :meth:`qn`'s SR1 form is the one meta-training shapes."""
        base = dict(QN_BFGS_RULES, memory=QN_BFGS_MEMORY)
        base.update(changes)
        return cls.qn(**base)

    def __post_init__(self):
        self.features = tuple(self.features)
        if self.form not in FORMS:
            raise LSR1Error(f"unknown L-SR1 form {self.form!r}; this library knows {list(FORMS)}")
        if self.safeguard not in SAFEGUARDS:
            raise LSR1Error(f"safeguard must be one of {list(SAFEGUARDS)}, got {self.safeguard!r}")
        if not isinstance(self.batchnorm, bool):
            raise LSR1Error(f"batchnorm must be true or false, got {self.batchnorm!r}")
        for name in ("step_bound", "probe", "gamma_factor"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not (val > 0 and math.isfinite(val)):
                raise LSR1Error(f"{name} must be a positive finite number, got {val!r}")
        if self.h0 not in H0_RULES:
            raise LSR1Error(f"h0 must be one of {list(H0_RULES)}, got {self.h0!r}")
        if self.update not in UPDATES:
            raise LSR1Error(f"update must be one of {list(UPDATES)}, got {self.update!r}")
        if self.update == "bfgs" and self.fallback != "bfgs":
            raise LSR1Error(f"update='bfgs' enters every pair as a BFGS update, so it needs fallback='bfgs', "
                            f"got fallback={self.fallback!r}")
        if self.fallback not in FALLBACKS:
            raise LSR1Error(f"fallback must be one of {list(FALLBACKS)}, got {self.fallback!r}")
        if not isinstance(self.restart, bool):
            raise LSR1Error(f"restart must be true or false, got {self.restart!r}")
        if not isinstance(self.probe_pair, bool):
            raise LSR1Error(f"probe_pair must be true or false, got {self.probe_pair!r}")
        if self.backtrack not in BACKTRACKS:
            raise LSR1Error(f"backtrack must be one of {list(BACKTRACKS)}, got {self.backtrack!r}")
        if isinstance(self.extrapolate, bool) or not isinstance(self.extrapolate, int) or not (
                0 <= self.extrapolate <= 100):
            raise LSR1Error(f"extrapolate must be an integer number of trials in [0, 100], got {self.extrapolate!r}")
        if isinstance(self.diag, bool) or not isinstance(self.diag, (int, float)) or not (
                math.isfinite(self.diag) and -DIAG_LIMIT <= self.diag <= DIAG_LIMIT):
            raise LSR1Error(f"diag (the diagonal metric's exponent) must be a number in [-{DIAG_LIMIT}, {DIAG_LIMIT}], "
                            f"got {self.diag!r}")
        if isinstance(self.diag_decay, bool) or not isinstance(self.diag_decay, (int, float)) or not (
                0 <= self.diag_decay < 1):
            raise LSR1Error(f"diag_decay must lie in [0, 1), got {self.diag_decay!r}")
        if self.diag and self.form != "qn":
            raise LSR1Error("diag (a diagonal H₀ metric) is a field of the qn form; the paper form has no H₀ scale")
        if isinstance(self.skip_eps, bool) or not isinstance(self.skip_eps, (int, float)) or not 0 <= self.skip_eps < 1:
            raise LSR1Error(f"skip_eps must lie in [0, 1), got {self.skip_eps!r}")
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise LSR1Error(f"hidden width must be a positive integer, got {self.hidden!r}")
        check_memory(self.memory)
        if not 0.0 <= self.dropout < 1.0:
            raise LSR1Error(f"dropout must lie in [0, 1), got {self.dropout}")
        if not (self.gamma1 > 0 and math.isfinite(self.gamma1)):
            raise LSR1Error(f"gamma1 must be positive and finite, got {self.gamma1}")
        if not math.isfinite(self.gamma2):
            raise LSR1Error(f"gamma2 must be finite, got {self.gamma2}")
        known = FEATURES if self.form == "paper" else QN_FEATURES
        bad = [f for f in self.features if f not in known]
        if bad or not self.features or len(set(self.features)) != len(self.features):
            raise LSR1Error(f"features of the {self.form!r} form must be a non-empty subset of {known} without "
                            f"repeats; got {self.features} (unknown: {bad})")
        if self.lr_clamp is not None and not self.lr_clamp > 0:
            raise LSR1Error(f"lr_clamp must be positive or None, got {self.lr_clamp}")


def default_net() -> "LSR1Net":
    """What :class:`~lsr1_core.learned.LSR1Optimizer` and :class:`~lsr1_core.learned.LSR1Solver` run when given no
    model and no checkpoint: the untrained :meth:`LSR1Config.qn_bfgs` net (α = 1; its step is the quasi-Newton
    step of the stored pairs under a strong-Wolfe search, as efficient as L-BFGS at equal evaluations, see
    docs/results_peers.md). Its hidden layers' initial weights are drawn from a fixed seed in a forked random
    state, so building it neither changes nor depends on the caller's random numbers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LSR1Net(LSR1Config.qn_bfgs())


class LSR1Net(nn.Module):
    """The three element-wise modules: input encoder E, vector generator P, LR generator G."""

    def __init__(self, config: LSR1Config | None = None):
        super().__init__()
        self.config = config or LSR1Config()
        c = self.config
        self.encoder = ElementwiseMLP(len(c.features), c.hidden, c.hidden, c.dropout, c.batchnorm)
        self.vector_generator = ElementwiseMLP(c.hidden, 1, c.hidden, c.dropout, c.batchnorm)
        self.lr_generator = ElementwiseMLP(c.hidden, 1, c.hidden, c.dropout, c.batchnorm)
        with torch.no_grad():
            rule_for(c).init_heads(self)  # the rule's untrained start

    # Rows per chunk at inference: the hidden activations of B·N rows need B·N·hidden numbers each, so large
    # N runs in chunks (exact: without BatchNorm, or with stored statistics, rows do not interact).
    CHUNK_ROWS = 1 << 18

    def raw(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats`` (B, N, F) → the two generators' raw outputs (B, N), (B, N)."""
        B, N, F = feats.shape
        rows = feats.reshape(B * N, F)
        independent = not any(isinstance(m, nn.BatchNorm1d) and m.training for m in self.modules())
        if torch.is_grad_enabled() or not independent or B * N <= self.CHUNK_ROWS:
            try:
                z = self.encoder(rows)
                return self.vector_generator(z).reshape(B, N), self.lr_generator(z).reshape(B, N)
            except RuntimeError as e:
                if "memory" not in str(e).lower() and "alloc" not in str(e).lower():
                    raise
                need = B * N * self.config.hidden * rows.element_size() * 6 / 1e9
                raise LSR1Error(f"L-SR1 at B·N = {B * N} coordinates needs about {need:.3g} GB of activations and "
                                f"the allocation failed; use fewer coordinates or a model without batch-statistics "
                                f"BatchNorm (the qn form), which runs in chunks") from None
        outs = [self.raw(rows[i:i + self.CHUNK_ROWS].unsqueeze(0)) for i in range(0, B * N, self.CHUNK_ROWS)]
        return (torch.cat([o[0].reshape(-1) for o in outs]).reshape(B, N),
                torch.cat([o[1].reshape(-1) for o in outs]).reshape(B, N))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Paper form: ``feats`` (B, N, F) → v (B, N), α (B, N)."""
        v, a_tilde = self.raw(feats)
        c = self.config
        alpha = c.gamma1 * torch.exp(c.gamma2 * a_tilde)
        if c.lr_clamp is not None:
            alpha = alpha.clamp(max=c.lr_clamp)
        return v, alpha

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def with_memory(self, memory: int) -> "LSR1Net":
        """A view of this model with another buffer size L (same weights, shared; the config checks L)."""
        return self.with_config(memory=memory)

    def with_config(self, **changes) -> "LSR1Net":
        """A view of this model with inference settings changed (e.g. memory, h0): same weights, shared."""
        bad = sorted(set(changes) & {"hidden", "features", "batchnorm", "form", "dropout"})
        if bad:
            raise LSR1Error(f"{bad} change the network's shape or form; they cannot be changed on a trained model")
        clone = LSR1Net.__new__(LSR1Net)
        nn.Module.__init__(clone)
        clone.config = self.config.replace(**changes)
        clone.encoder, clone.vector_generator, clone.lr_generator = self.encoder, self.vector_generator, self.lr_generator
        return clone


class LSR1Operator(CurvatureOperator):
    """B̃ = s·I + Σ_i v_i v_iᵀ (s = 1, or 0 once the buffer is full with ``drop_identity_when_full``),
    optionally followed by the authors' per-row rescaling of the output to the input's norm."""

    def __init__(self, W: torch.Tensor, identity: bool = True, rescale: bool = False,
                 scale: torch.Tensor | None = None, complement: tuple[torch.Tensor, torch.Tensor] | None = None,
                 bfgs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        # scale (B, 1): the identity part is scale·I (the qn form's γ = pᵀq/qᵀq); None means 1.
        # complement (U, c): U (B, N, l) orthonormal columns, c (B, 1) ≥ 0; adds c·(I − UUᵀ), the qn form's
        # larger scale on directions its stored pairs have not measured (h0 = "two_scale").
        # bfgs (P, Q, ρ): the qn form's BFGS fallback (fallback = "bfgs"). The updates are then applied in
        # order, pair i either adding v_i v_iᵀ (SR1; W[:, i] = 0 where it is not) or, where ρ_i > 0, the BFGS
        # update H ← (I − ρ p qᵀ) H (I − ρ q pᵀ) + ρ p pᵀ (ρ = 1/pᵀq), applied by a two-loop recursion.
        self.W, self.identity, self.rescale, self.scale = W, identity, rescale, scale
        self.complement, self.bfgs = complement, bfgs
        self.dtype, self.device = W.dtype, W.device

    @property
    def shape(self):
        return (self.W.shape[0], self.W.shape[2])

    def _interleaved(self, u: torch.Tensor) -> torch.Tensor:
        """γI followed by the pairs' SR1 and BFGS updates in order (two-loop recursion, O(lN))."""
        P, Q, rho = self.bfgs
        y, a, b = u, [], []
        for i in reversed(range(self.W.shape[1])):
            a_i = rho[:, i:i + 1] * (P[:, i] * y).sum(-1, keepdim=True)  # 0 where pair i is not a BFGS update
            b.append((self.W[:, i] * y).sum(-1, keepdim=True))
            a.append(a_i)
            y = y - a_i * Q[:, i]
        out = y if self.scale is None else self.scale * y  # the qn form always keeps its γI
        a.reverse(), b.reverse()
        for i in range(self.W.shape[1]):
            out = out + P[:, i] * (a[i] - rho[:, i:i + 1] * (Q[:, i] * out).sum(-1, keepdim=True)) + b[i] * self.W[:, i]
        return out

    def linear_matvec(self, u: torch.Tensor) -> torch.Tensor:
        if self.bfgs is not None and self.W.shape[1]:
            out = self._interleaved(u)
        else:
            if not self.identity:
                out = torch.zeros_like(u)
            else:
                out = u if self.scale is None else self.scale * u
            if self.W.shape[1]:
                out = out + torch.einsum("bl,bln->bn", torch.einsum("bln,bn->bl", self.W, u), self.W)
        if self.complement is not None:
            U, c = self.complement
            out = out + c * (u - torch.einsum("bnl,bl->bn", U, torch.einsum("bnl,bn->bl", U, u)))
        return out

    def matvec(self, u: torch.Tensor) -> torch.Tensor:
        out = self.linear_matvec(u)
        if self.rescale:
            out = out * (u.norm(dim=-1, keepdim=True) / out.norm(dim=-1, keepdim=True).clamp_min(1e-30))
        return out

    def dense(self) -> torch.Tensor:
        """The linear part (B, N, N) — without the rescaling, which is not linear."""
        if self.bfgs is not None:
            return super().dense()
        B, N = self.shape
        M = torch.einsum("bli,blj->bij", self.W, self.W)
        if self.identity:
            eye = torch.eye(N, dtype=self.dtype, device=self.device)
            M = M + (eye if self.scale is None else self.scale.view(B, 1, 1) * eye)
        if self.complement is not None:
            U, c = self.complement
            eye = torch.eye(N, dtype=self.dtype, device=self.device)
            M = M + c.view(B, 1, 1) * (eye - torch.einsum("bil,bjl->bij", U, U))
        return M

    def detach(self):
        comp = None if self.complement is None else (self.complement[0].detach(), self.complement[1].detach())
        bfgs = None if self.bfgs is None else tuple(t.detach() for t in self.bfgs)
        return LSR1Operator(self.W.detach(), self.identity, self.rescale,
                            None if self.scale is None else self.scale.detach(), comp, bfgs)


@dataclass
class LSR1State:
    x: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    p: torch.Tensor
    d: torch.Tensor
    q: torch.Tensor
    W: torch.Tensor  # (B, l, N), oldest first
    Bq: torch.Tensor  # B̃_{k-1} q_{k-1}, the authors' alternative third feature
    k: int = 0
    gamma: torch.Tensor | None = None  # qn form: (B, 1) scale of the identity part, set by the first probe
    pending_evals: int = 0  # evaluations made before the next step (the qn form's probe), counted there
    P: torch.Tensor | None = None  # qn form: stored pairs p_i, q_i and learned corrections u_i, (B, l, N)
    Q: torch.Tensor | None = None
    U: torch.Tensor | None = None
    S: torch.Tensor | None = None  # qn form with diag ≠ 0: (B, N) exponential average of g² (the diagonal metric)

    @classmethod
    def initial(cls, x0: torch.Tensor, f: torch.Tensor, g: torch.Tensor) -> "LSR1State":
        """Algorithm 1, line 1: p_0 = x_0, q_0 = d_0 = g_0, an empty buffer (x0, g: (B, N); f: (B,))."""
        return cls(x=x0, f=f, g=g, p=x0, d=g, q=g, W=x0.new_zeros(x0.shape[0], 0, x0.shape[1]), Bq=g, k=0)


def init_state(objective, x0: torch.Tensor, create_graph: bool = False) -> LSR1State:
    """Algorithm 1, line 1: p_0 = x_0, q_0 = g_0, d_0 = g_0, empty buffer."""
    f, g = objective.value_and_grad(x0)
    return LSR1State.initial(x0, f, g)


def check_model_input(x0: torch.Tensor) -> None:
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2:
        raise ShapeError("x0 must be a tensor of shape (B, N)")
    if not torch.isfinite(x0).all():
        raise NonFiniteError("starting point contains NaN or infinity")
