"""LODO against Adam, L-BFGS and gradient descent on the LODO paper's tasks, and how well LODO's
learned preconditioner approximates the inverse Hessian on the noisy quadratic bowl.

    python -m experiments.lodo_results            # writes docs/results_lodo.md, docs/figures/lodo_*.png
    python -m experiments.lodo_results --quick    # a smoke run into a temporary folder

Budgets are far below the paper's (it runs the bowl for 100k steps); see the markdown it writes.
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

from lsr1_core.errors import LSR1Error
from lsr1_core.objectives.lodo_tasks import DigitsMLP, LODORosenbrock, NoisyQuadraticBowl, run_nonstationary
from lsr1_core.solvers import make_solver, run

from ._report import command, write_report

DT = torch.float64
COMMAND = command("lodo_results")


def _try_solver(name: str, **kwargs):
    """A solver, or None with the reason when it is not available (e.g. L-BFGS not written yet)."""
    try:
        return make_solver(name, **kwargs), None
    except (ImportError, AttributeError, LSR1Error, TypeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _available(configs, skipped: dict, log_skip=None):
    """(name, label, solver) of each config whose solver can be built; the others go to ``skipped`` with the
    reason (and to ``log_skip``)."""
    for name, label, kw in configs:
        solver, why = _try_solver(name, **kw)
        if solver is None:
            skipped[label] = why
            if log_skip:
                log_skip(f"skip {label}: {why}")
            continue
        yield name, label, solver


def _window_mean(f: torch.Tensor, last: int) -> float:
    """Mean over the last ``last`` steps and over rows, ignoring non-finite values."""
    tail = f[-last:]
    tail = tail[torch.isfinite(tail)]
    return float(tail.mean()) if tail.numel() else float("nan")


# --------------------------------------------------------------------------- noisy quadratic bowl
def preconditioner_quality(P: torch.Tensor, bowl: NoisyQuadraticBowl, probes: torch.Tensor) -> dict:
    """How close P (B, n, n) is to the bowl's inverse Hessian, per row.

    * ``kappa``: condition number of H^½ P H^½ (1 when P ∝ H⁻¹; κ(H) = 1000 for P = I);
    * ``rel_fro``: min_s ‖sP − H⁻¹‖_F / ‖H⁻¹‖_F (the best scale s chosen per row);
    * ``scale``: that best s (P ≈ H⁻¹/s);
    * ``cos_newton``: mean cosine between P g and the Newton direction H⁻¹g over probe errors
      e (g = He, H⁻¹g = e).
    """
    Q, lam = bowl.eigvecs.to(P), bowl.eigvals.to(P)
    Hh = (Q * lam.sqrt()) @ Q.T
    M = Hh @ P @ Hh
    ev = torch.linalg.eigvalsh(0.5 * (M + M.transpose(1, 2)))
    kappa = ev[:, -1] / ev[:, 0].clamp_min(1e-300)
    Hinv = bowl.Hinv.to(P)
    s = (P * Hinv).sum((1, 2)) / (P * P).sum((1, 2))
    rel = torch.linalg.matrix_norm(s.view(-1, 1, 1) * P - Hinv) / torch.linalg.matrix_norm(Hinv)
    g = probes @ bowl.H.to(P)  # (K, n): gradients of probe errors
    Pg = torch.einsum("bij,kj->bki", P, g)
    cos = torch.nn.functional.cosine_similarity(Pg, probes.unsqueeze(0).expand_as(Pg), dim=-1).mean(1)
    # spectrum of P in H's eigenbasis: diag(QᵀPQ), to compare with 1/λ
    proj = torch.einsum("ji,bjk,ki->bi", Q, P, Q)
    return {"kappa": kappa, "rel_fro": rel, "scale": s, "cos_newton": cos, "proj": proj}


def noisy_bowl(steps: int, batch: int, record_every: int, seed: int = 0, log=print) -> dict:
    n = 100
    x0 = torch.zeros(batch, n, dtype=DT)
    probes = torch.randn(64, n, generator=torch.Generator().manual_seed(seed + 99), dtype=DT)
    configs = [("lodo", "LODO (paper defaults)", {}),
               ("lodo", "LODO-Diagonal (ablation)", {"diagonal": True}),
               ("gd", "GD lr=0.3", {"lr": 0.3}), ("gd", "GD lr=1", {"lr": 1.0}), ("gd", "GD lr=1.5", {"lr": 1.5}), ("gd", "GD lr=1.8", {"lr": 1.8}),
               ("adam", "Adam lr=0.01", {"lr": 0.01}), ("adam", "Adam lr=0.03", {"lr": 0.03}),
               ("adam", "Adam lr=0.1", {"lr": 0.1}), ("adam", "Adam lr=0.3", {"lr": 0.3}),
               ("lbfgs", "L-BFGS (defaults)", {})]
    out = {"runs": {}, "skipped": {}, "quality": {}}
    floor = None
    for name, label, solver in _available(configs, out["skipped"], lambda msg: log(f"  bowl: {msg}")):
        bowl = NoisyQuadraticBowl(n=n, batch=batch, seed=seed)
        floor = bowl.noise_floor()
        gen = torch.Generator().manual_seed(seed + 1)  # the same random walks for every solver
        evals = []

        def record(k, s, info, bowl=bowl, evals=evals):
            evals.append(info.evals)
            if name == "lodo" and (k % record_every == 0 or k == steps) and info.operator is not None:
                return (k, preconditioner_quality(info.operator.dense(), bowl, probes))
            return None

        t0 = time.perf_counter()
        try:
            res = run_nonstationary(solver, bowl, x0, steps, gen, record=record, record_every=1)
        except (LSR1Error, RuntimeError) as exc:
            out["skipped"][label] = f"failed: {type(exc).__name__}: {exc}"
            log(f"  bowl: {label} failed: {exc}")
            continue
        wall = time.perf_counter() - t0
        recs = [r for r in res.records if r is not None]
        if recs:
            out["quality"][label] = {"steps": [0] + [k for k, _ in recs],
                                     "metrics": [_initial_quality(solver, bowl, probes)] + [q for _, q in recs]}
        out["runs"][label] = {"f": res.f, "wall_s": wall, "evals_per_step": sum(evals) / max(len(evals), 1)}
        log(f"  bowl: {label:34s} final-window loss {_window_mean(res.f, steps // 10):9.3f}  ({wall:5.1f} s)")
    out["noise_floor"] = floor
    return out


def _initial_quality(solver, bowl, probes) -> dict:
    """Quality of LODO's preconditioner at initialisation: P = lr·I for both variants."""
    B, n = solver.state["x"].shape
    P = solver.lr * torch.eye(n, dtype=DT).expand(B, n, n).clone()
    return preconditioner_quality(P, bowl, probes)


# --------------------------------------------------------------------------- Rosenbrock
def rosenbrock(steps: int, log=print) -> dict:
    obj = LODORosenbrock()
    x0 = obj.start()
    configs = [("lodo", "LODO (paper defaults)", {}), ("lodo", "LODO-Diagonal (ablation)", {"diagonal": True}),
               ("gd", "GD lr=0.03", {"lr": 0.03}), ("gd", "GD lr=0.1", {"lr": 0.1}), ("gd", "GD lr=0.2", {"lr": 0.2}),
               ("adam", "Adam lr=0.01", {"lr": 0.01}), ("adam", "Adam lr=0.03", {"lr": 0.03}),
               ("adam", "Adam lr=0.1", {"lr": 0.1}), ("lbfgs", "L-BFGS (defaults)", {})]
    out = {"runs": {}, "skipped": {}}
    for name, label, solver in _available(configs, out["skipped"]):
        try:
            tr = run(solver, obj, x0, steps)
        except (LSR1Error, RuntimeError) as exc:
            out["skipped"][label] = f"failed: {type(exc).__name__}: {exc}"
            continue
        out["runs"][label] = {"f": tr.f[:, 0], "x": tr.x[:, 0], "evals": int(tr.evals.sum()),
                              "diverged_at": int(tr.diverged_at[0])}
        log(f"  rosenbrock: {label:28s} f = {float(tr.f[-1, 0]):.3e}  evals {int(tr.evals.sum())}")
    return out


# --------------------------------------------------------------------------- digits MLP
def digits(steps: int, seed: int = 0, log=print) -> dict:
    configs = [("lodo", "LODO lr=1 (paper defaults)", {}), ("lodo", "LODO lr=0.3", {"lr": 0.3}),
               ("gd", "SGD lr=0.3", {"lr": 0.3}), ("gd", "SGD lr=1", {"lr": 1.0}),
               ("adam", "Adam lr=0.003", {"lr": 0.003}), ("adam", "Adam lr=0.01", {"lr": 0.01}),
               ("adam", "Adam lr=0.03", {"lr": 0.03}), ("lbfgs", "L-BFGS (defaults)", {})]
    out = {"runs": {}, "skipped": {}}
    for name, label, solver in _available(configs, out["skipped"]):
        task = DigitsMLP(seed=seed)
        x0 = task.init_params(1, seed=seed)
        gen = torch.Generator().manual_seed(seed + 1)  # the same minibatch sequence for every solver
        evals = []
        t0 = time.perf_counter()
        try:
            res = run_nonstationary(solver, task, x0, steps, gen, record=lambda k, s, info: evals.append(info.evals))
        except (LSR1Error, RuntimeError) as exc:
            out["skipped"][label] = f"failed: {type(exc).__name__}: {exc}"
            continue
        wall = time.perf_counter() - t0
        x = solver.state["x"]
        out["runs"][label] = {"f": res.f[:, 0], "wall_s": wall, "train_loss": float(task.full_loss(x, "train")),
                              "test_loss": float(task.full_loss(x, "test")),
                              "test_acc": float(task.accuracy(x, "test")), "evals": sum(evals)}
        r = out["runs"][label]
        log(f"  digits: {label:26s} train {r['train_loss']:.4f} test {r['test_loss']:.4f} "
            f"acc {r['test_acc']:.4f} ({wall:5.1f} s)")
    out["dim"] = DigitsMLP(seed=seed).dim
    return out


# --------------------------------------------------------------------------- figures and markdown
def _smooth(f: torch.Tensor, w: int) -> torch.Tensor:
    """Running mean over w steps of (T,) or (T, B) (then averaged over rows)."""
    if f.dim() == 2:
        f = f.mean(1)
    w = max(1, min(w, f.numel()))
    c = torch.cumsum(torch.nn.functional.pad(f, (1, 0)), 0)
    return (c[w:] - c[:-w]) / w


def make_figures(bowl: dict, rosen: dict, dig: dict, fig_dir: Path) -> list[Path]:
    import matplotlib  # optional and heavy: only the figures need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg")

    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    # 1. noisy bowl loss
    fig, ax = plt.subplots(figsize=(8, 5))
    best = _best_per_family(bowl["runs"], lambda r: _window_mean(r["f"], r["f"].shape[0] // 10))
    steps = next(iter(bowl["runs"].values()))["f"].shape[0] - 1
    w = max(1, steps // 100)
    for label in best:
        f = bowl["runs"][label]["f"]
        y = _smooth(f, w)
        ax.plot(torch.arange(w, steps + 2)[: y.numel()].numpy(), y.numpy(), label=label)
    ax.axhline(bowl["noise_floor"], color="k", ls="--", lw=1, label="noise floor ½tr(H)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (running mean over {w} steps, mean of rows)")
    ax.set_title("Noisy quadratic bowl (n = 100)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(fig_dir / "lodo_noisy_bowl_loss.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. preconditioner quality
    if bowl["quality"]:
        fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
        for label, q in bowl["quality"].items():
            ks = q["steps"]
            for ax, key, title in zip(axes[:3], ["kappa", "rel_fro", "cos_newton"],
                                      ["κ(H^½ P H^½)  (1 = exact up to scale)",
                                       "min_s ‖sP − H⁻¹‖_F / ‖H⁻¹‖_F", "cos(P g, H⁻¹ g), probe errors"]):
                ax.plot(ks, [float(m[key].mean()) for m in q["metrics"]], marker=".", label=label)
                ax.set_title(title, fontsize=9)
                ax.set_xlabel("step")
            proj = q["metrics"][-1]["proj"].mean(0)
            axes[3].loglog(_bowl_eigs().numpy(), proj.numpy(), ".", label=f"{label}, step {ks[-1]}")
        lam = _bowl_eigs()
        s = float(bowl["quality"][next(iter(bowl["quality"]))]["metrics"][-1]["scale"].mean())
        axes[3].loglog(lam.numpy(), (1 / (lam * s)).numpy(), "k--", lw=1, label="H⁻¹ (best scale, LODO)")
        axes[3].set_xlabel("eigenvalue λ_i of H")
        axes[3].set_title("q_iᵀ P q_i along H's eigenvectors", fontsize=9)
        axes[0].set_yscale("log")
        for ax in axes:
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(fig_dir / "lodo_preconditioner_quality.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    # 3. Rosenbrock
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    best = _best_per_family(rosen["runs"], lambda r: float(r["f"][-1]) if r["diverged_at"] < 0 else float("inf"))
    u = torch.linspace(-1.5, 1.8, 300, dtype=DT)
    v = torch.linspace(-0.5, 3.0, 300, dtype=DT)
    U, V = torch.meshgrid(u, v, indexing="xy")
    obj = LODORosenbrock()
    Z = obj.value(torch.stack([U.flatten(), V.flatten()], 1)).reshape(U.shape)
    axes[1].contour(U.numpy(), V.numpy(), torch.log10(Z + 1e-4).numpy(), levels=25, cmap="Greys", linewidths=0.6)
    for label in best:
        r = rosen["runs"][label]
        axes[0].semilogy(r["f"].clamp_min(1e-16).numpy(), label=label)
        axes[1].plot(r["x"][:, 0].numpy(), r["x"][:, 1].numpy(), ".-", ms=2, lw=0.8, label=label)
    axes[1].plot([1], [1], "k*", ms=10)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("f")
    axes[0].set_title("Rosenbrock 0.01(1−x)² + (y−x²)² from (−0.5, 2)")
    axes[1].set_title("trajectories")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(fig_dir / "lodo_rosenbrock.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 4. digits
    fig, ax = plt.subplots(figsize=(8, 5))
    best = _best_per_family(dig["runs"], lambda r: r["train_loss"])
    steps = next(iter(dig["runs"].values()))["f"].shape[0] - 1
    w = max(1, steps // 50)
    for label in best:
        y = _smooth(dig["runs"][label]["f"], w)
        ax.semilogy(torch.arange(w, steps + 2)[: y.numel()].numpy(), y.numpy(), label=label)
    ax.set_xlabel("step (one minibatch of 64 each)")
    ax.set_ylabel(f"minibatch loss (running mean over {w} steps)")
    ax.set_title(f"MLP 64-32-10 on scikit-learn digits ({dig['dim']} parameters)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(fig_dir / "lodo_digits.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _bowl_eigs() -> torch.Tensor:
    return torch.logspace(-3, 0, 100, dtype=DT)


def _family(label: str) -> str:
    return label.split(" lr=")[0].split(" (")[0]


def _best_per_family(runs: dict, score) -> list[str]:
    """For each method family (GD, Adam, ...) the label of its best-scoring setting."""
    best: dict[str, tuple[float, str]] = {}
    for label, r in runs.items():
        s = score(r)
        s = s if math.isfinite(s) else float("inf")
        fam = _family(label)
        if fam not in best or s < best[fam][0]:
            best[fam] = (s, label)
    return [lab for _, lab in best.values()]


def write_markdown(path: Path, bowl: dict, rosen: dict, dig: dict, cfg: dict, total_s: float,
                   figs: list[Path]) -> None:
    L = []
    L.append("# LODO beside the classical baselines")
    L.append("")
    L.append(f"Produced by `{COMMAND}` ({total_s:.0f} s on this machine's CPU, {torch.get_num_threads()} torch "
             f"thread(s), torch {torch.__version__}, Python {platform.python_version()}). Every number below is "
             "regenerated by that command; seeds are fixed.")
    L.append("")
    L.append("LODO (Liao et al., *Learning to Optimize Quasi-Newton Methods*, TMLR 2023) learns its "
             "preconditioner G(θ) = −lr·[I 0]WᵀW[I 0]ᵀ online by hypergradient descent (implementation: "
             "`lsr1_core/solvers/lodo.py`; tasks: `lsr1_core/objectives/lodo_tasks.py`). All LODO runs use the "
             "paper's defaults (lr 1.0, meta-lr 1e-3 with Adam, β = 0.9, 16 layers of 4×4 blocks) unless "
             "the label says otherwise. Baselines get a small learning-rate sweep and the figures show the best "
             "setting of each; LODO gets none beyond one extra lr on the digits task.")
    L.append("")
    L.append("**Budgets are much smaller than the paper's** to keep the command to a few minutes on a 2-core "
             f"CPU: the noisy bowl runs {cfg['bowl_steps']:,} steps (the paper: 100,000), the digits MLP "
             f"{cfg['digits_steps']:,} steps; Rosenbrock runs the paper's {cfg['rosen_steps']} steps.")
    L.append("")
    skipped = {**bowl["skipped"], **rosen["skipped"], **dig["skipped"]}
    if skipped:
        L.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in sorted(skipped.items())) + ".")
        L.append("")

    # bowl
    n_last = cfg["bowl_steps"] // 10
    L.append("## Noisy quadratic bowl")
    L.append("")
    L.append(f"f = ½(x − c)ᵀH(x − c), n = 100, eigenvalues of H log-spaced in [1e-3, 1], random orthogonal "
             f"eigenvectors; the centre c takes an N(0, I) step before every step, x₀ = 0. {cfg['bowl_batch']} "
             f"independent random walks (batch rows), the same walks for every solver. Loss = mean over rows and "
             f"over the last {n_last:,} steps. Even a solver that lands exactly on the current centre pays "
             f"½tr(H) = **{bowl['noise_floor']:.2f}** on average (the noise floor: exact Newton, x ← x − H⁻¹g, lands "
             "on the current centre every step and so pays exactly this in expectation; it is left out of the "
             "runs because its dense solve per step would double this command's time).")
    L.append("")
    L.append("| solver | loss, last 10% | loss, steps 10–20% | gradient evals/step | wall s |")
    L.append("|---|---:|---:|---:|---:|")
    T = cfg["bowl_steps"]
    for label, r in bowl["runs"].items():
        early = r["f"][T // 10: T // 5]
        L.append(f"| {label} | {_window_mean(r['f'], n_last):.2f} | {_window_mean(early, early.shape[0]):.2f} | "
                 f"{r['evals_per_step']:.1f} | {r['wall_s']:.1f} |")
    L.append("")
    if bowl["quality"]:
        L.append("How close LODO's P = −G is to the true inverse Hessian (mean over rows; κ(H) = 1000, so "
                 "P = lr·I starts at κ = 1000):")
        L.append("")
        L.append("| preconditioner | step | κ(H^½PH^½) | min_s ‖sP − H⁻¹‖_F/‖H⁻¹‖_F | cos(Pg, H⁻¹g) | best scale s |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for label, q in bowl["quality"].items():
            ks, ms = q["steps"], q["metrics"]
            picks = sorted({0, len(ks) // 4, len(ks) // 2, len(ks) - 1})
            for i in picks:
                m = ms[i]
                L.append(f"| {label} | {ks[i]:,} | {float(m['kappa'].mean()):.1f} | {float(m['rel_fro'].mean()):.3f} | "
                         f"{float(m['cos_newton'].mean()):.3f} | {float(m['scale'].mean()):.3g} |")
        L.append("")
    L.append("![noisy bowl loss](figures/lodo_noisy_bowl_loss.png)")
    L.append("")
    L.append("![preconditioner quality](figures/lodo_preconditioner_quality.png)")
    L.append("")

    # Rosenbrock
    L.append("## Rosenbrock (the paper's rescaled one)")
    L.append("")
    L.append("f = 0.01(1 − x)² + (y − x²)² from (−0.5, 2), minimum 0 at (1, 1), 200 steps.")
    L.append("")
    L.append("| solver | f after 200 steps | ‖x − (1,1)‖ | objective evaluations |")
    L.append("|---|---:|---:|---:|")
    for label, r in rosen["runs"].items():
        dist = float(torch.linalg.vector_norm(r["x"][-1] - torch.ones(2, dtype=DT)))
        div = " (diverged)" if r["diverged_at"] >= 0 else ""
        L.append(f"| {label} | {float(r['f'][-1]):.3e}{div} | {dist:.3e} | {r['evals']} |")
    L.append("")
    L.append("![rosenbrock](figures/lodo_rosenbrock.png)")
    L.append("")

    # digits
    L.append("## A small real training task: MLP on scikit-learn digits")
    L.append("")
    L.append(f"A 64–32–10 tanh MLP ({dig['dim']:,} parameters, cross-entropy) on the 8×8 digits bundled with "
             f"scikit-learn (1,797 images, 25% held out), minibatches of 64 drawn with a fixed seed, "
             f"{cfg['digits_steps']:,} steps. Our stand-in for the paper's 95k-parameter MNIST model, which is "
             "out of this CPU budget.")
    L.append("")
    L.append("| solver | full train loss | test loss | test accuracy | gradient evals | wall s |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for label, r in dig["runs"].items():
        L.append(f"| {label} | {r['train_loss']:.4f} | {r['test_loss']:.4f} | {r['test_acc']:.4f} | {r['evals']} | "
                 f"{r['wall_s']:.1f} |")
    L.append("")
    L.append("![digits](figures/lodo_digits.png)")
    L.append("")

    # claims
    L.append("## The paper's claims and what we see")
    L.append("")
    L.extend(_claims(bowl, rosen, dig, cfg))
    L.append("")
    write_report(path.parent, "lodo", None, "\n".join(L) + "\n", md_name=path.name, echo=False)


def _claims(bowl, rosen, dig, cfg) -> list[str]:
    out = []
    n_last = cfg["bowl_steps"] // 10
    runs = bowl["runs"]
    lodo = runs.get("LODO (paper defaults)")
    diag = runs.get("LODO-Diagonal (ablation)")
    others = {k: _window_mean(v["f"], n_last) for k, v in runs.items() if not k.startswith(("LODO", "Newton"))}
    if lodo is not None and others:
        lo = _window_mean(lodo["f"], n_last)
        best_k = min(others, key=others.get)
        verdict = "agrees" if lo < others[best_k] else "does **not** agree at our budget"
        out.append(f"- *LODO optimizes well in noisy settings (the noisy bowl).* LODO's late loss is {lo:.2f} against "
                   f"{others[best_k]:.2f} for the best tuned baseline ({best_k}); noise floor "
                   f"{bowl['noise_floor']:.2f}. Our result {verdict}.")
    q = bowl["quality"].get("LODO (paper defaults)")
    if q is not None:
        k0, k1 = float(q["metrics"][0]["kappa"].mean()), float(q["metrics"][-1]["kappa"].mean())
        c0, c1 = float(q["metrics"][0]["cos_newton"].mean()), float(q["metrics"][-1]["cos_newton"].mean())
        r0, r1 = float(q["metrics"][0]["rel_fro"].mean()), float(q["metrics"][-1]["rel_fro"].mean())
        by_spectrum = k1 < k0 and c1 > c0
        by_fro = r1 < r0
        if by_spectrum and by_fro:
            verdict = "P moves towards H⁻¹ by all three measures: our result agrees"
        elif by_spectrum:
            verdict = ("P moves towards H⁻¹ in shape (κ and the cosine improve) but not in the Frobenius sense, "
                       "which is dominated by the 1/λ = 1000 direction, the one a noisy one-step hypergradient "
                       "learns slowest: our result agrees only partly, at our budget")
        else:
            verdict = "P does not move towards H⁻¹ at our budget"
        out.append(f"- *LODO's preconditioner approaches the inverse Hessian in noisy landscapes.* Over "
                   f"{q['steps'][-1]:,} steps κ(H^½PH^½) went {k0:.0f} → {k1:.1f}, the cosine to the Newton "
                   f"direction {c0:.3f} → {c1:.3f}, and the scale-optimal relative Frobenius error "
                   f"{r0:.3f} → {r1:.3f}: {verdict}. The loss nevertheless stays far above tuned GD's: with "
                   "P far from H⁻¹ and β = 0.9 momentum averaging stale gradients of a moving target, LODO tracks "
                   "the centre more slowly than plain GD with a step near its stability limit (our reading, "
                   "not a measured decomposition).")
    if lodo is not None and diag is not None:
        lo, dg = _window_mean(lodo["f"], n_last), _window_mean(diag["f"], n_last)
        if lo < 0.95 * dg:
            verdict = "agrees"
        elif lo <= 1.05 * dg:
            verdict = "shows no clear difference (within 5%) at our budget, so it neither confirms nor refutes it"
        else:
            verdict = "does **not** agree at our budget"
        out.append(f"- *Simpler preconditioner parameterisations do worse.* LODO-Diagonal (G = −lr·diag(θ), θ₀ = 1, "
                   f"the ablation in the authors' code) reaches {dg:.2f} on the bowl vs {lo:.2f} for LODO: our "
                   f"result {verdict}. (H's eigenvectors are random, so no diagonal can represent H⁻¹.)")
    rr = rosen["runs"]
    if "LODO (paper defaults)" in rr:
        fl = float(rr["LODO (paper defaults)"]["f"][-1])
        rest = {k: float(v["f"][-1]) for k, v in rr.items() if not k.startswith("LODO") and v["diverged_at"] < 0}
        if rest:
            bk = min(rest, key=rest.get)
            out.append(f"- *Rosenbrock (200 steps).* LODO f = {fl:.2e}; best other {bk} f = {rest[bk]:.2e}.")
    dr = dig["runs"]
    if dr:
        lod = {k: v for k, v in dr.items() if k.startswith("LODO")}
        rest = {k: v for k, v in dr.items() if not k.startswith("LODO")}
        if lod and rest:
            bl = min(lod, key=lambda k: lod[k]["train_loss"])
            br = min(rest, key=lambda k: rest[k]["train_loss"])
            out.append(f"- *LODO trains a real network at speeds comparable to standard optimizers.* On the digits MLP "
                       f"the best LODO ({bl}) reaches train loss {lod[bl]['train_loss']:.4f} / test accuracy "
                       f"{lod[bl]['test_acc']:.3f} against {rest[br]['train_loss']:.4f} / {rest[br]['test_acc']:.3f} "
                       f"for the best baseline ({br}) per step; per wall-clock second LODO is "
                       f"{lod[bl]['wall_s'] / max(rest[br]['wall_s'], 1e-9):.0f}× slower here (its 32 small "
                       "block-matrix layers cost far more than the 2,410-parameter MLP itself).")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets, outputs into --out (a smoke test)")
    p.add_argument("--out", type=Path, default=None, help="docs folder to write into (default: docs/)")
    p.add_argument("--bowl-steps", type=int, default=20000)
    p.add_argument("--bowl-batch", type=int, default=4)
    p.add_argument("--digits-steps", type=int, default=1500)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the work is dispatch-bound)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.bowl_steps, args.bowl_batch, args.digits_steps = 400, 2, 60
    out = args.out if args.out is not None else Path(__file__).resolve().parents[1] / "docs"
    cfg = {"bowl_steps": args.bowl_steps, "bowl_batch": args.bowl_batch, "digits_steps": args.digits_steps,
           "rosen_steps": 200}
    t0 = time.perf_counter()
    print(f"noisy bowl: {args.bowl_steps} steps x {args.bowl_batch} walks", flush=True)
    bowl = noisy_bowl(args.bowl_steps, args.bowl_batch, record_every=max(1, args.bowl_steps // 20))
    print("rosenbrock", flush=True)
    rosen = rosenbrock(cfg["rosen_steps"])
    print(f"digits MLP: {args.digits_steps} steps", flush=True)
    dig = digits(args.digits_steps)
    figs = make_figures(bowl, rosen, dig, out / "figures")
    total = time.perf_counter() - t0
    write_markdown(out / "results_lodo.md", bowl, rosen, dig, cfg, total, figs)
    print(f"wrote {out / 'results_lodo.md'} and {len(figs)} figures in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
