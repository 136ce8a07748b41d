"""Standard optimization test functions that none of the project's other suites use (the generality benchmark).

Every class is a batched :class:`~lsr1_core.objectives.base.Objective`: ``value(x)`` maps ``x`` of shape
(B, N) to (B,), gradients come from autograd, and ``minimizer()`` / ``min_value()`` give x* and f* (for the
three data-fitting functions x* is computed once, to gradient norm ~1e-13, by a damped Newton method in
float64). Inputs are validated with :func:`~lsr1_core.objectives.base.check_batch` (``value`` checks too).

Functions (``EXTRA_FUNCTIONS`` maps the short names to constructors ``cls(n)``):

=================  ============================================================  =====================
name               f(x)                                                          f*, x*
=================  ============================================================  =====================
powell             extended Powell singular (N = 4k), Hessian singular at x*      0 at 0
wood               extended Wood (N = 4k)                                         0 at 1
trid               Σ (x_i − 1)² − Σ x_i x_{i−1}  (convex quadratic, κ ~ N²)       −N(N+4)(N−1)/6
dixon_price        (x_1 − 1)² + Σ_{i≥2} i (2x_i² − x_{i−1})²                       0
zakharov           Σ x_i² + (Σ ½ i x_i)² + (Σ ½ i x_i)⁴                            0 at 0
styblinski_tang    ½ Σ (x_i⁴ − 16 x_i² + 5 x_i)  (multimodal)                       −39.16616570377142·N
ackley             −20 e^{−0.2 √(mean x²)} − e^{mean cos 2πx} + 20 + e (kink at 0)  0 at 0
levy               Levy (w = 1 + (x − 1)/4)                                      0 at 1
griewank           Σ x_i²/4000 − Π cos(x_i/√i) + 1                                 0 at 0
sum_powers         Σ |x_i|^{i+1}  (very flat, degenerate at 0)                    0 at 0
logistic           L2-regularised logistic regression on fixed synthetic data    numeric
huber              Huber regression with outliers on fixed synthetic data        numeric
logsumexp          μ log Σ_j exp((a_jᵀx − b_j)/μ)  (smoothed max of affine)       numeric
broken_scale       Σ a_i log cosh(x_i − 1), a_i log-spaced over 1e-4 … 1e4        0 at 1
=================  ============================================================  =====================

:class:`ShiftRotated` wraps any of them as f(R(x − o)) with a seeded orthogonal R and shift o.
"""
from __future__ import annotations

import math

import torch

from lsr1_core.errors import ShapeError, UnknownNameError
from lsr1_core.objectives.base import Objective, check_batch


class _Extra(Objective):
    """Shared plumbing: fixed N, validation in ``value``, domain and starts."""

    #: the usual search box (low, high) per coordinate, for random starts
    domain: tuple[float, float] = (-5.0, 5.0)
    #: whether x* is a point where the (auto)gradient vanishes (Ackley: a kink, 0 is a subgradient)
    smooth_at_min: bool = True
    #: N must be a multiple of this
    block: int = 1
    min_dim: int = 1

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < self.min_dim or n % self.block:
            need = f"a multiple of {self.block}" if self.block > 1 else f"an integer ≥ {self.min_dim}"
            raise ShapeError(f"{type(self).__name__} needs N {need}, got {n!r}")
        self.dim = n
        self.name = f"{self.base_name}_n{n}"

    base_name = "extra"

    def value(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self._value(x)

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def standard_start(self) -> torch.Tensor | None:
        """The start the literature uses (1, N), or None."""
        return None

    def starts(self, k: int = 2, seed: int = 0) -> torch.Tensor:
        """k starting points (k, N): the standard start first where there is one, then seeded uniform draws from
        ``domain``."""
        g = torch.Generator().manual_seed(seed)
        lo, hi = self.domain
        rand = lo + (hi - lo) * torch.rand(k, self.dim, generator=g, dtype=torch.float64)
        std = self.standard_start()
        if std is not None:
            rand[0] = std[0]
        return rand

    def min_value(self):
        xs = self.minimizer()
        return None if xs is None else self.value(xs).detach()


class PowellSingular(_Extra):
    """Extended Powell singular function (Moré, Garbow & Hillstrom 1981, #13), N = 4k:

        f(x) = Σ_blocks (x₁ + 10x₂)² + 5(x₃ − x₄)² + (x₂ − 2x₃)⁴ + 10(x₁ − x₄)⁴,

    f* = 0 at x* = 0, where the Hessian is singular (rank 2 per block): convergence is only linear for Newton-type
    methods. Standard start (3, −1, 0, 1) repeated.
    """

    base_name = "powell"
    block, min_dim = 4, 4
    domain = (-4.0, 5.0)

    def _value(self, x):
        a, b, c, d = (x[:, i::4] for i in range(4))
        return ((a + 10 * b) ** 2 + 5 * (c - d) ** 2 + (b - 2 * c) ** 4 + 10 * (a - d) ** 4).sum(-1)

    def standard_start(self):
        return torch.tensor([3.0, -1.0, 0.0, 1.0], dtype=torch.float64).repeat(self.dim // 4).unsqueeze(0)

    def minimizer(self):
        return torch.zeros(1, self.dim, dtype=torch.float64)


class Wood(_Extra):
    """Extended Wood function (Moré, Garbow & Hillstrom #14), N = 4k:

        f(x) = Σ_blocks 100(x₁² − x₂)² + (x₁ − 1)² + 90(x₃² − x₄)² + (x₃ − 1)²
                         + 10.1((x₂ − 1)² + (x₄ − 1)²) + 19.8(x₂ − 1)(x₄ − 1),

    f* = 0 at x* = 1. Standard start (−3, −1, −3, −1) repeated.
    """

    base_name = "wood"
    block, min_dim = 4, 4
    domain = (-10.0, 10.0)

    def _value(self, x):
        a, b, c, d = (x[:, i::4] for i in range(4))
        return (100 * (a * a - b) ** 2 + (a - 1) ** 2 + 90 * (c * c - d) ** 2 + (c - 1) ** 2
                + 10.1 * ((b - 1) ** 2 + (d - 1) ** 2) + 19.8 * (b - 1) * (d - 1)).sum(-1)

    def standard_start(self):
        return torch.tensor([-3.0, -1.0, -3.0, -1.0], dtype=torch.float64).repeat(self.dim // 4).unsqueeze(0)

    def minimizer(self):
        return torch.ones(1, self.dim, dtype=torch.float64)


class Trid(_Extra):
    """Trid function: f(x) = Σ_{i=1}^N (x_i − 1)² − Σ_{i=2}^N x_i x_{i−1}.

    A convex quadratic (Hessian 2I − offdiag, condition number ~ N²/2.5) whose minimiser
    x*_i = i(N + 1 − i) grows like N²/4: f* = −N(N + 4)(N − 1)/6. Domain [−N², N²].
    """

    base_name = "trid"
    convex = True

    @property
    def domain(self):
        return (-float(self.dim ** 2), float(self.dim ** 2))

    def _value(self, x):
        return ((x - 1) ** 2).sum(-1) - (x[:, 1:] * x[:, :-1]).sum(-1)

    def minimizer(self):
        i = torch.arange(1, self.dim + 1, dtype=torch.float64)
        return (i * (self.dim + 1 - i)).unsqueeze(0)

    def exact_min(self) -> float:
        n = self.dim
        return -n * (n + 4) * (n - 1) / 6


class DixonPrice(_Extra):
    """Dixon–Price function: f(x) = (x₁ − 1)² + Σ_{i=2}^N i (2x_i² − x_{i−1})².

    f* = 0 at x*_i = 2^{−(2^i − 2)/2^i} (and at sign flips of x₂…x_N). Domain [−10, 10]; standard start x = 1.
    """

    base_name = "dixon_price"
    domain = (-10.0, 10.0)

    def _value(self, x):
        i = torch.arange(2, self.dim + 1, dtype=x.dtype, device=x.device)
        return (x[:, 0] - 1) ** 2 + (i * (2 * x[:, 1:] ** 2 - x[:, :-1]) ** 2).sum(-1)

    def standard_start(self):
        return torch.ones(1, self.dim, dtype=torch.float64)

    def minimizer(self):
        i = torch.arange(1, self.dim + 1, dtype=torch.float64)
        return torch.pow(2.0, -(1 - torch.pow(2.0, 1 - i))).unsqueeze(0)


class Zakharov(_Extra):
    """Zakharov function: f(x) = Σ x_i² + (Σ ½ i x_i)² + (Σ ½ i x_i)⁴, f* = 0 at 0.

    Unimodal, but the quartic term along the single direction (1, 2, …, N) makes f(x₀) huge at large N
    (~10¹⁶ at N = 100 from the usual box [−5, 10]).
    """

    base_name = "zakharov"
    domain = (-5.0, 10.0)

    def _value(self, x):
        i = torch.arange(1, self.dim + 1, dtype=x.dtype, device=x.device)
        s = (0.5 * i * x).sum(-1)
        return (x * x).sum(-1) + s ** 2 + s ** 4

    def minimizer(self):
        return torch.zeros(1, self.dim, dtype=torch.float64)


def _styblinski_root() -> float:
    """The global minimiser per coordinate of ½(t⁴ − 16t² + 5t): the root of 4t³ − 32t + 5 near −2.9035."""
    t = -2.9
    for _ in range(50):
        t -= (4 * t ** 3 - 32 * t + 5) / (12 * t * t - 32)
    return t


STYBLINSKI_X = _styblinski_root()
STYBLINSKI_F = 0.5 * (STYBLINSKI_X ** 4 - 16 * STYBLINSKI_X ** 2 + 5 * STYBLINSKI_X)  # −39.16616570377142


class StyblinskiTang(_Extra):
    """Styblinski–Tang function: f(x) = ½ Σ (x_i⁴ − 16 x_i² + 5 x_i).

    Separable and multimodal (2^N local minima; each coordinate has a local minimum near 2.7468 and the global
    one at t* = −2.903534…): f* = −39.16616570377142·N at x* = t*·1. Domain [−5, 5].
    """

    base_name = "styblinski_tang"

    def _value(self, x):
        return 0.5 * (x ** 4 - 16 * x ** 2 + 5 * x).sum(-1)

    def minimizer(self):
        return torch.full((1, self.dim), STYBLINSKI_X, dtype=torch.float64)


class Ackley(_Extra):
    """Ackley function: f(x) = −20 exp(−0.2 √(mean x²)) − exp(mean cos 2πx_i) + 20 + e, f* = 0 at 0.

    Multimodal, and not differentiable at x* (a cone: the norm's kink); autograd gives the subgradient 0 there.
    Domain [−32.768, 32.768].
    """

    base_name = "ackley"
    domain = (-32.768, 32.768)
    smooth_at_min = False

    def _value(self, x):
        n = x.shape[1]
        r = torch.linalg.vector_norm(x, dim=-1) / math.sqrt(n)
        return -20 * torch.exp(-0.2 * r) - torch.exp(torch.cos(2 * math.pi * x).mean(-1)) + 20 + math.e

    def minimizer(self):
        return torch.zeros(1, self.dim, dtype=torch.float64)


class Levy(_Extra):
    """Levy function with w_i = 1 + (x_i − 1)/4:

        f(x) = sin²(π w₁) + Σ_{i<N} (w_i − 1)² [1 + 10 sin²(π w_i + 1)] + (w_N − 1)² [1 + sin²(2π w_N)],

    multimodal, f* = 0 at x* = 1. Domain [−10, 10].
    """

    base_name = "levy"
    domain = (-10.0, 10.0)

    def _value(self, x):
        w = 1 + (x - 1) / 4
        head = torch.sin(math.pi * w[:, 0]) ** 2
        mid = ((w[:, :-1] - 1) ** 2 * (1 + 10 * torch.sin(math.pi * w[:, :-1] + 1) ** 2)).sum(-1)
        last = (w[:, -1] - 1) ** 2 * (1 + torch.sin(2 * math.pi * w[:, -1]) ** 2)
        return head + mid + last

    def minimizer(self):
        return torch.ones(1, self.dim, dtype=torch.float64)


class Griewank(_Extra):
    """Griewank function: f(x) = Σ x_i²/4000 − Π cos(x_i/√i) + 1, f* = 0 at 0.

    A very flat bowl (curvature 1/2000) with many shallow local minima. Domain [−600, 600].
    """

    base_name = "griewank"
    domain = (-600.0, 600.0)

    def _value(self, x):
        i = torch.arange(1, self.dim + 1, dtype=x.dtype, device=x.device)
        return (x * x).sum(-1) / 4000 - torch.cos(x / i.sqrt()).prod(-1) + 1

    def minimizer(self):
        return torch.zeros(1, self.dim, dtype=torch.float64)


class SumOfPowers(_Extra):
    """Sum of different powers: f(x) = Σ_{i=1}^N |x_i|^{i+1}, f* = 0 at 0.

    Convex but degenerate: the Hessian at 0 has rank 1 and coordinate i's curvature vanishes like |x_i|^{i−1},
    so most coordinates are almost flat. Domain [−1, 1].
    """

    base_name = "sum_powers"
    domain = (-1.0, 1.0)
    convex = True

    def _value(self, x):
        e = torch.arange(2, self.dim + 2, dtype=x.dtype, device=x.device)
        return (x.abs() ** e).sum(-1)

    def minimizer(self):
        return torch.zeros(1, self.dim, dtype=torch.float64)


def _log_cosh(z: torch.Tensor) -> torch.Tensor:
    """log cosh z, stable for large |z| (|z| + log1p(e^{−2|z|}) − log 2)."""
    a = z.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


class BrokenScale(_Extra):
    """A separable function with broken scales: f(x) = Σ a_i log cosh(x_i − 1), a_i = 10^{−4 … 4} log-spaced.

    The curvature at x* = 1 is a_i (eight decades apart), and far from x* every coordinate is linear with slope
    a_i (a Huber-like tail), so curvature information from far away says nothing about the scale near x*.
    f* = 0. Domain [−10, 10].
    """

    base_name = "broken_scale"
    domain = (-10.0, 10.0)
    convex = True

    def __init__(self, n: int):
        super().__init__(n)
        self.a = torch.logspace(-4, 4, n, dtype=torch.float64) if n > 1 else torch.ones(1, dtype=torch.float64)

    def _value(self, x):
        return (self.a.to(x) * _log_cosh(x - 1)).sum(-1)

    def minimizer(self):
        return torch.ones(1, self.dim, dtype=torch.float64)


# --- data-fitting functions: x* computed numerically -------------------------------------------------------

def newton_minimize(fn, x0: torch.Tensor, iters: int = 200, gtol: float = 1e-13) -> torch.Tensor:
    """Damped Newton with Armijo backtracking on a smooth convex ``fn: (N,) -> ()`` (float64, small N); returns
    x (N,). Used once per data-fitting objective to fix x*."""
    x = x0.clone()
    for _ in range(iters):
        xx = x.detach().requires_grad_(True)
        f = fn(xx)
        (g,) = torch.autograd.grad(f, xx)
        if float(g.norm()) <= gtol * max(1.0, abs(float(f.detach()))):
            break
        H = torch.autograd.functional.hessian(fn, x.detach())
        H = 0.5 * (H + H.T)
        try:
            d = torch.linalg.solve(H + 1e-14 * H.diagonal().abs().max() * torch.eye(len(x), dtype=x.dtype), g)
        except RuntimeError:
            d = torch.linalg.lstsq(H, g.unsqueeze(-1)).solution.squeeze(-1)
        if not bool(torch.isfinite(d).all()) or float(d @ g) <= 0:
            d = g
        t, f0 = 1.0, float(f.detach())
        with torch.no_grad():
            # near x* a decrease of f falls below rounding: there a full step that does not raise f beyond
            # rounding and shrinks the gradient is taken (the end game is decided by ‖g‖, not by f)
            xn = (x - d).detach().requires_grad_(True)
            with torch.enable_grad():
                (gn,) = torch.autograd.grad(fn(xn), xn)
            if float(fn(x - d)) <= f0 + 8 * 2.2e-16 * abs(f0) and float(gn.norm()) < 0.5 * float(g.norm()):
                x = (x - d).detach()
                continue
            while t > 1e-20 and float(fn(x - t * d)) > f0 - 1e-4 * t * float(d @ g):
                t *= 0.5
            if t <= 1e-20:
                break
            x = x - t * d
    return x.detach()


class _DataFit(_Extra):
    """A convex loss on fixed synthetic data (seeded), x* found by :func:`newton_minimize` at construction."""

    seed = 1234
    domain = (-3.0, 3.0)
    convex = True

    def __init__(self, n: int, seed: int | None = None):
        super().__init__(n)
        self.gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        self._make_data()
        xs = newton_minimize(lambda w: self._value(w.unsqueeze(0))[0], torch.zeros(n, dtype=torch.float64))
        self._xstar = xs.unsqueeze(0)

    def _make_data(self):
        raise NotImplementedError

    def minimizer(self):
        return self._xstar.clone()


class LogisticRegression(_DataFit):
    """L2-regularised logistic regression: f(w) = (1/m) Σ_j log(1 + exp(−y_j a_jᵀw)) + (λ/2)‖w‖², λ = 10⁻³.

    m = max(40, 4N) samples, features a_j ~ N(0, I) with columns scaled by 10^{−1 … 1} (curvature spread ~10⁴),
    labels y_j = sign(a_jᵀw_true + noise) (not separable). f* and x* computed numerically (Newton).
    """

    base_name = "logistic"
    lam = 1e-3

    def _make_data(self):
        n, g = self.dim, self.gen
        m = max(40, 4 * n)
        cols = torch.logspace(-1, 1, n, dtype=torch.float64) if n > 1 else torch.ones(1, dtype=torch.float64)
        self.A = torch.randn(m, n, generator=g, dtype=torch.float64) * cols
        w = torch.randn(n, generator=g, dtype=torch.float64) / cols
        z = self.A @ w + 0.5 * torch.randn(m, generator=g, dtype=torch.float64) * (self.A @ w).std()
        self.y = torch.where(z >= 0, 1.0, -1.0).to(torch.float64)

    def _value(self, x):
        A, y = self.A.to(x), self.y.to(x)
        z = -(x @ A.T) * y  # (B, m)
        return torch.nn.functional.softplus(z).mean(-1) + 0.5 * self.lam * (x * x).sum(-1)


class HuberRegression(_DataFit):
    """Huber regression with outliers: f(w) = (1/m) Σ_j h_δ(a_jᵀw − b_j) + (λ/2)‖w‖², δ = 0.5, λ = 10⁻⁴,

    h_δ(r) = r²/2 for |r| ≤ δ, δ(|r| − δ/2) beyond (C¹ but not C²: the Hessian jumps). m = max(40, 4N),
    b = A w_true + 0.1·noise with 20 % of the entries shifted by ±10. f*, x* numeric.
    """

    base_name = "huber"
    lam, delta = 1e-4, 0.5

    def _make_data(self):
        n, g = self.dim, self.gen
        m = max(40, 4 * n)
        self.A = torch.randn(m, n, generator=g, dtype=torch.float64)
        w = torch.randn(n, generator=g, dtype=torch.float64)
        b = self.A @ w + 0.1 * torch.randn(m, generator=g, dtype=torch.float64)
        out = torch.rand(m, generator=g, dtype=torch.float64) < 0.2
        sign = torch.where(torch.rand(m, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0).to(torch.float64)
        self.b = torch.where(out, b + 10 * sign, b)

    def _value(self, x):
        r = x @ self.A.to(x).T - self.b.to(x)
        a, d = r.abs(), self.delta
        h = torch.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))
        return h.mean(-1) + 0.5 * self.lam * (x * x).sum(-1)


class LogSumExp(_DataFit):
    """Smoothed maximum of affine functions: f(x) = μ log Σ_j exp((a_jᵀx − b_j)/μ), μ = 0.05.

    The a_j come in ± pairs (m = 2·max(10, 2N) rows, a_j ~ N(0, I)), so f is bounded below and coercive;
    b_j ~ U(0, 1). Near x* the Hessian is (1/μ)·Aᵀ(diag π − ππᵀ)A: stiff along the active pieces, soft across
    them. f*, x* numeric.
    """

    base_name = "logsumexp"
    mu = 0.05

    def _make_data(self):
        n, g = self.dim, self.gen
        k = max(10, 2 * n)
        a = torch.randn(k, n, generator=g, dtype=torch.float64)
        self.A = torch.cat([a, -a], 0)
        self.b = torch.rand(2 * k, generator=g, dtype=torch.float64)

    def _value(self, x):
        z = (x @ self.A.to(x).T - self.b.to(x)) / self.mu
        return self.mu * torch.logsumexp(z, dim=-1)


# --- shift and rotation ---------------------------------------------------------------------------------------

def random_rotation(n: int, seed: int = 0) -> torch.Tensor:
    """A seeded random orthogonal (N, N) matrix (QR of a Gaussian matrix with the sign fix), float64."""
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R)).unsqueeze(0)


class ShiftRotated(Objective):
    """f̃(x) = f(R(x − o)) for an orthogonal R and shift o: x̃* = o + Rᵀx*, f̃* = f*.

    ``R`` and ``o`` are seeded (``seed``); o ~ U(−1, 1)·``shift``. :meth:`map_start` sends a start x₀ of f to the
    equivalent start o + Rᵀx₀ of f̃, so a rotation- and translation-invariant solver traces the same values.
    """

    def __init__(self, base: Objective, seed: int = 0, shift: float = 1.0):
        if base.dim is None:
            raise ShapeError("ShiftRotated needs an objective of fixed dimension")
        self.base = base
        n = base.dim
        self.R = random_rotation(n, seed)
        g = torch.Generator().manual_seed(seed + 1)
        self.o = shift * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)
        self.dim, self.batch, self.convex = n, base.batch, base.convex
        self.name = f"rot_{getattr(base, 'name', 'objective')}"

    def check(self, x):
        check_batch(x, self.dim, self.batch)

    def value(self, x):
        self.check(x)
        return self.base.value((x - self.o.to(x)) @ self.R.to(x).T)

    def map_start(self, x0: torch.Tensor) -> torch.Tensor:
        return self.o.to(x0) + x0 @ self.R.to(x0)

    def minimizer(self):
        xs = self.base.minimizer()
        return None if xs is None else self.map_start(xs)

    def min_value(self):
        m = self.base.min_value()
        return None if m is None else m


EXTRA_FUNCTIONS: dict[str, type[_Extra]] = {
    "powell": PowellSingular,
    "wood": Wood,
    "trid": Trid,
    "dixon_price": DixonPrice,
    "zakharov": Zakharov,
    "styblinski_tang": StyblinskiTang,
    "ackley": Ackley,
    "levy": Levy,
    "griewank": Griewank,
    "sum_powers": SumOfPowers,
    "logistic": LogisticRegression,
    "huber": HuberRegression,
    "logsumexp": LogSumExp,
    "broken_scale": BrokenScale,
}

#: functions a rotation changes (separable or axis-aligned ones) and that have no data matrix already mixing
#: the coordinates: the generality benchmark also runs their shifted/rotated variant
ROTATABLE = ("powell", "wood", "trid", "dixon_price", "zakharov", "styblinski_tang", "ackley", "levy", "griewank",
             "sum_powers", "broken_scale")


def extra_function(name: str, n: int) -> _Extra:
    """Build one of :data:`EXTRA_FUNCTIONS` at dimension ``n``."""
    try:
        cls = EXTRA_FUNCTIONS[name]
    except KeyError:
        raise UnknownNameError(f"unknown function {name!r}; choose one of {sorted(EXTRA_FUNCTIONS)}") from None
    return cls(n)


def defined_dim(name: str, n: int) -> int:
    """The dimension used for ``name`` when N = n is asked: n rounded up to the function's block size (4 for the
    extended Powell and Wood functions)."""
    block = EXTRA_FUNCTIONS[name].block
    return max(EXTRA_FUNCTIONS[name].min_dim, -(-n // block) * block)
