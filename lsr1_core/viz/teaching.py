"""Teaching helpers: L-SR1's I + Σ vvᵀ, numbers written for LaTeX, and where a run blew up. (SR1's uphill step
beside L-SR1's is computed in lsr1_core.viz.lessons.)"""
from __future__ import annotations

import math

import numpy as np


def lsr1_matrix_from_vectors(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """I + Σ v vᵀ and its eigenvalues (all ≥ 1) for vectors (L, N)."""
    n = vectors.shape[1]
    M = np.eye(n) + vectors.T @ vectors
    return M, np.linalg.eigvalsh(M)


# --- numbers in LaTeX -----------------------------------------------------------------------------------------
def tex_num(x: float, digits: int = 4) -> str:
    """A number for LaTeX: 0.0123 → '0.0123', -4.608e-05 → '-4.608 \\times 10^{-5}', inf → '\\infty'."""
    x = float(x)
    if math.isnan(x):
        return r"\mathrm{NaN}"
    if math.isinf(x):
        return r"\infty" if x > 0 else r"-\infty"
    if x == 0:
        return "0"
    e = math.floor(math.log10(abs(x)))
    if -3 <= e < digits:
        return f"{x:.{digits}g}"
    m = x / 10 ** e
    ms = f"{m:.{digits}g}"
    if ms in ("10", "-10"):  # rounding carried into the next power
        ms, e = ms[:-1], e + 1
    return (f"{ms} \\times " if ms not in ("1", "-1") else ("-" if ms == "-1" else "")) + f"10^{{{e}}}"


def tex_vec(v, digits: int = 4) -> str:
    return r"\begin{pmatrix}" + r"\\".join(tex_num(x, digits) for x in np.ravel(v)) + r"\end{pmatrix}"


def tex_mat(M, digits: int = 4) -> str:
    return (r"\begin{pmatrix}" + r"\\".join(" & ".join(tex_num(x, digits) for x in row) for row in np.atleast_2d(M))
            + r"\end{pmatrix}")


def fmt_list(values, digits: int = 3) -> str:
    """Plain text: [1.23e-07, 0.0151] (never rounds a small value to 0.0)."""
    return "[" + ", ".join(f"{float(v):.{digits}g}" for v in values) + "]"


def escaped_at(tr, bounds, factor: float = 100.0) -> int:
    """The first step k whose iterate x_k lies beyond ``factor`` × the plotted span around the plotted range,
    or is non-finite, or the solver diverged (-1 if none): from there on the run's matrices and residuals are
    numbers of a blown-up run (1e26, 1e55), not curvature."""
    (x0, x1), (y0, y1) = bounds
    span = max(x1 - x0, y1 - y0)
    xy = tr.x[:, 0, :2].double().cpu().numpy()
    lo = np.array([x0, y0]) - factor * span
    hi = np.array([x1, y1]) + factor * span
    bad = ~np.isfinite(xy).all(1) | (xy < lo).any(1) | (xy > hi).any(1)
    ks = np.nonzero(bad)[0]
    k = int(ks[0]) if len(ks) else -1
    div = int(tr.diverged_at[0])
    if div >= 0 and (k < 0 or div < k):
        k = div
    return k
