"""Wall time per evaluation of ``LSR1Optimizer`` beside ``torch.optim.LBFGS`` (issue 23's cost target).

    python -m experiments.optimizer_cost [--sizes 1000 100000 1000000] [--steps 30] [--repeat 2] [--pairs P]
                                         [--out docs]

A ridge regression with N parameters (64 samples, float32, one torch thread), 30 ``step`` calls each: the default
without a card (the untrained ``LSR1Config.qn_bfgs()``; its one-row step, :mod:`lsr1_core.learned.qn_one`), the same
with the batched code (``lbfgs.ONE_ROW = False``; the ablation), the qn form from ``pretrained/qn_quadratic`` (the
SR1 form of the cards; its output layers are zero, so its networks are skipped and its operator is kept in compact
Gram form, :mod:`lsr1_core.learned.compact`), the same with the explicit path forced (``compact.FORCE_EXPLICIT``; the
O(L²N) vector rebuild), the paper form from ``pretrained/quadratic`` (step_scale 0.05; up to N = 10⁵: its
per-coordinate networks need N × 128 activations), and torch.optim.LBFGS (strong Wolfe, history 10) run one
iteration per ``step`` call and, without its repeated evaluations, as one call.
Tolerances are off for all, so each makes all its steps. Reported: milliseconds per closure call (all of it, and
the optimizer's own share: total minus the time inside the closure), calls, final loss; each run is repeated
(``--repeat``, the same work each time) and the fastest kept, which damps another job's load on a shared machine. A
third table takes the default and torch.optim.LBFGS alternately (``--pairs`` runs of each, default 21 at N ≤ 10⁴, 7
up to 10⁵, 3 above; 0 leaves it out) and reports the median of the per-evaluation ratios: the two see the same load,
so the ratio spreads far less than either time. A small table restates the target in the optimizer's own time per
step (what 1.5× per evaluation leaves it, beside torch.optim.LBFGS's own time per step). Writes
docs/benchmarks_optimizer.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from lsr1_core.checkpoints import PRETRAINED_DIR
from lsr1_core.errors import NonFiniteError
from lsr1_core.learned import LSR1Optimizer, compact
from lsr1_core.solvers import lbfgs

from ._report import command, machine, out_dir, write_report


def measure(n: int, method: str, steps: int = 30, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(64, n, generator=g) / n ** 0.5
    b = torch.randn(64, generator=g)
    w = torch.nn.Parameter(torch.zeros(n))
    if method in ("qn", "qn_explicit"):
        opt = LSR1Optimizer([w], checkpoint=PRETRAINED_DIR / "qn_quadratic", tolerance_grad=None,
                            tolerance_change=None)
    elif method in ("qn_bfgs", "qn_bfgs_batched"):  # the default: no card
        opt = LSR1Optimizer([w], tolerance_grad=None, tolerance_change=None)
    elif method == "paper":
        opt = LSR1Optimizer([w], checkpoint=PRETRAINED_DIR / "quadratic", step_scale=0.05, tolerance_grad=None,
                            tolerance_change=None)
    elif method == "lbfgs_one_call":  # the same iterations inside one step() call (no re-evaluation per call)
        opt = torch.optim.LBFGS([w], lr=1, max_iter=steps, max_eval=25 * steps, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=0, tolerance_change=0)
    else:
        opt = torch.optim.LBFGS([w], lr=1, max_iter=1, history_size=10, line_search_fn="strong_wolfe",
                                tolerance_grad=0, tolerance_change=0)
    calls, inside = 0, 0.0

    def closure():
        nonlocal calls, inside
        t = time.perf_counter()
        opt.zero_grad()
        loss = ((A @ w - b) ** 2).mean() + 1e-3 * (w * w).sum()
        loss.backward()
        calls += 1
        inside += time.perf_counter() - t
        return loss

    t0 = time.perf_counter()
    note = ""
    compact.FORCE_EXPLICIT = method == "qn_explicit"
    lbfgs.ONE_ROW = method != "qn_bfgs_batched"
    try:
        for _ in range(1 if method == "lbfgs_one_call" else steps):
            opt.step(closure)
    except NonFiniteError:  # the paper form's unguarded step can leave the finite range: what it cost until then
        note = "diverged (non-finite step; stopped)"
    finally:
        compact.FORCE_EXPLICIT = False
        lbfgs.ONE_ROW = True
    total = time.perf_counter() - t0
    with torch.no_grad():
        final = float(((A @ w - b) ** 2).mean() + 1e-3 * (w * w).sum())
    iterations = opt.state[w].get("n_iter", steps) if method == "lbfgs_one_call" else steps
    return {"ms_per_eval": 1e3 * total / calls, "own_ms_per_eval": 1e3 * (total - inside) / calls, "calls": calls,
            "loss": final, "total_s": total, "note": note, "iterations": iterations,
            "own_ms_per_step": 1e3 * (total - inside) / iterations, "closure_ms": 1e3 * inside / calls}


def time_to_solution(n: int, method: str, seed: int = 0, max_steps: int = 200) -> dict:
    """The same ridge regression solved as a user would: ``LSR1Optimizer`` with its default tolerances (torch's
    1e-7 / 1e-9) stepped until ``converged``, torch.optim.LBFGS as one ``step`` call with its defaults (strong Wolfe,
    history 10, ``max_iter`` = ``max_steps``). Wall time, evaluations and the final loss."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(64, n, generator=g) / n ** 0.5
    b = torch.randn(64, generator=g)
    w = torch.nn.Parameter(torch.zeros(n))
    if method == "qn_bfgs":
        opt = LSR1Optimizer([w])
    elif method == "qn":
        opt = LSR1Optimizer([w], checkpoint=PRETRAINED_DIR / "qn_quadratic")
    else:
        opt = torch.optim.LBFGS([w], lr=1, max_iter=max_steps, max_eval=25 * max_steps, history_size=10,
                                line_search_fn="strong_wolfe")
    calls = 0

    def closure():
        nonlocal calls
        opt.zero_grad()
        loss = ((A @ w - b) ** 2).mean() + 1e-3 * (w * w).sum()
        loss.backward()
        calls += 1
        return loss

    t0 = time.perf_counter()
    if isinstance(opt, LSR1Optimizer):
        for _ in range(max_steps):
            opt.step(closure)
            if opt.converged:
                break
    else:
        opt.step(closure)
    total = time.perf_counter() - t0
    with torch.no_grad():
        final = float(((A @ w - b) ** 2).mean() + 1e-3 * (w * w).sum())
    return {"total_s": total, "calls": calls, "loss": final}


def interleaved(n: int, pairs: int, steps: int = 30) -> dict:
    """The default's ms per evaluation ÷ torch.optim.LBFGS's (``max_iter=1``), from ``pairs`` runs of each taken
    alternately: median, lowest and highest ratio."""
    ratios = sorted(measure(n, "qn_bfgs", steps)["ms_per_eval"] / measure(n, "lbfgs", steps)["ms_per_eval"]
                    for _ in range(pairs))
    return {"median": statistics.median(ratios), "low": ratios[0], "high": ratios[-1], "pairs": pairs}


def default_pairs(n: int) -> int:
    return 21 if n <= 10_000 else 7 if n <= 100_000 else 3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=command("optimizer_cost"), description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=None,
                    help="alternate runs of the default and torch.optim.LBFGS per size for the spread table "
                         "(default: 21 / 7 / 3 by size; 0 leaves the table out)")
    ap.add_argument("--out", default="docs")
    a = ap.parse_args(argv)
    if any(n < 1 for n in a.sizes) or a.steps < 1 or a.repeat < 1:
        ap.error("--sizes, --steps and --repeat must be positive integers")
    if a.pairs is not None and a.pairs < 0:
        ap.error("--pairs must be 0 (no spread table) or a positive integer")
    out = out_dir(ap, a.out)
    torch.set_num_threads(1)
    rows = []
    for n in a.sizes:
        for m in ("qn_bfgs", "qn", "lbfgs", "lbfgs_one_call", "qn_bfgs_batched", "qn_explicit") + (
                ("paper",) if n <= 100_000 else ()):
            r = min((measure(n, m, a.steps) for _ in range(a.repeat)), key=lambda r: r["total_s"])
            rows.append((n, m, r))
            print(n, m, r, file=sys.stderr)
    names = {"qn": "LSR1Optimizer, SR1 qn form (`qn_quadratic`)",
             "qn_bfgs": "**LSR1Optimizer default** (no card: untrained `LSR1Config.qn_bfgs()`)",
             "qn_bfgs_batched": "  ablation: the default with the batched search and recursion (no one-row paths)",
             "qn_explicit": "  ablation: SR1 qn form, explicit path (no compact form)",
             "paper": "LSR1Optimizer, paper form (`quadratic`)",
             "lbfgs": "torch.optim.LBFGS (strong Wolfe, history 10: the default's memory)",
             "lbfgs_one_call": "  torch.optim.LBFGS, one `step` call (max_iter = steps; it stops where a step "
                               "no longer changes x)"}
    lines = ["# LSR1Optimizer: wall time per evaluation", "",
             f"Command: `{command('optimizer_cost', *(argv or sys.argv[1:]))}`. "
             f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             f"Ridge regression (64 samples, float32, one thread), the same {a.steps} `step` calls for each, tolerances "
             f"off, the fastest of {a.repeat} runs. "
             "torch.optim.LBFGS keeps 10 pairs, as the default does (the SR1 qn card keeps 8). "
             "*Own* is the optimizer's share (total minus the time inside the closure). Target (issue 23): the "
             "default form ≤ 1.5× torch.optim.LBFGS per evaluation. The last column compares the whole run: the same "
             f"{a.steps} steps, which reach the same final loss. torch.optim.LBFGS with `max_iter=1` (one iteration "
             "per `step` call, as the other optimizers are called) evaluates the closure again at the start of every "
             "call, at the point its last line search ended on, so about half of its evaluations repeat a point and "
             "cost it no optimizer work, which lowers its cost per evaluation; LSR1Optimizer keeps f and ∇f of its "
             "accepted point instead. The indented LBFGS row runs its loop in one call, without the repeats (and "
             "stops by itself once a step no longer changes x).", "",
             "| N | optimizer | ms per evaluation | own ms per evaluation | evaluations | total s (30 steps) | final loss | "
             "÷ LBFGS per evaluation | ÷ LBFGS (one call) per evaluation | ÷ LBFGS total |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ref = {n: r for n, m, r in rows if m == "lbfgs"}
    one = {n: r for n, m, r in rows if m == "lbfgs_one_call"}
    for n, m, r in rows:
        ratio = f"{r['ms_per_eval'] / ref[n]['ms_per_eval']:.2f}×" if m != "lbfgs" else ""
        ratio1 = f"{r['ms_per_eval'] / one[n]['ms_per_eval']:.2f}×" if m not in ("lbfgs", "lbfgs_one_call") else ""
        whole = f"{r['total_s'] / ref[n]['total_s']:.2f}×" if m != "lbfgs" else ""
        lines.append(f"| {n:,} | {names[m]} | {r['ms_per_eval']:.3f} | {r['own_ms_per_eval']:.3f} | {r['calls']} | "
                     f"{r['total_s']:.3f} | "
                     f"{r['loss']:.6g}{' — ' + r['note'] if r['note'] else ''} | {ratio} | {ratio1} | {whole} |")
    own = [(n, r) for n, m, r in rows if m == "qn_bfgs"]
    calls = sorted({r["calls"] for _, r in own})
    spent = f"{calls[0]}–{calls[-1]}" if len(calls) > 1 else f"{calls[0]}"
    ref_calls = "/".join(sorted({str(r["calls"]) for n, m, r in rows if m == "lbfgs"}))
    whole_txt = ", ".join(f"{r['total_s'] / ref[n]['total_s']:.2f}× at N = {n:,}" for n, r in own)
    lines += ["", "The qn form keeps its operator as a·I + ZᵀMZ over the stored pairs (Z) with a small M computed in "
              "float64 from their Gram matrix (the model's correction is zero, so every vector lies in their span): a "
              "step costs one product of the window with the new pair and g (the Gram's new entries), one product "
              "for H'q and Hg, and a few O(N) vector operations. Two things cost more here: where the stored "
              "differences are nearly dependent (the curvature probe's and the first steps') the float32 Gram "
              "matrix's rounding (~1e-6) would be amplified into the direction, so those steps (19 and 16 of the 30 "
              "at 10⁵ and 10⁶, measured) are recomputed in float64 from float64 copies of the pairs; and where the "
              "Gram cannot certify the two-scale complement's projector it orthonormalises the differences (Cholesky "
              "QR, or the explicit QR). The explicit path (ablation row) rebuilds the O(L²N) vectors whenever γ "
              "changes. What is left beside L-BFGS's O(LN) two-loop recursion: those passes over the 2L stored "
              "vectors, the step's vector operations and the safeguard's (its Armijo test and lengthening check "
              "allocate and compare whole vectors each step), and the optimizer's flattening of gradients. "
              "The default, `LSR1Config.qn_bfgs()` (BFGS update, newest-pair γ, strong-Wolfe search), takes its own "
              "path: the two-loop recursion on the pair buffer, L-BFGS's O(LN) work, with the pairs' inner products "
              "kept. For one row (`LSR1Optimizer` always has one) the whole step runs in `lsr1_core.learned.qn_one`: "
              "the batched step's decisions made on numbers instead of (1,)-shaped tensors, bit for bit the same "
              "iterates (tests/test_qn_one.py); its line search keeps its bookkeeping in scalars, its recursion its "
              "coefficients in Python numbers, each new pair is computed into the buffer slot it is kept in, the "
              "accepted trial point is not formed or written again, and its whole-vector tests read each vector "
              "without writing a temporary (`lsr1_core.rowops`); the ablation row runs the batched code instead. "
              "Its bookkeeping is lean too: the buffer window and next slots come from a record the last step left "
              "(the buffer is inspected only where it changes), the pairs' inner products are kept as numbers, the "
              "step's zero fields are shared constants, and `LSR1Optimizer` writes x, reads f and the gradient and "
              "checks that the parameters still hold the accepted point (by memcmp; it lets the next step reuse f "
              "and ∇f instead of evaluating again) without building lists. What is left beside torch's at 10³ is "
              "Python and small tensor calls, about 220 a step against torch.optim.LBFGS's 120 (the two-loop "
              "recursion is the same 40 in both; beside it the pairs' inner products with the curvature test's "
              "third, the finiteness tests, the stopping rules, that check, the state `state_dict` saves): about "
              "0.45 ms of its own per step where torch.optim.LBFGS spends about 0.25 ms. The closure also runs "
              "slower after a step's worth of other calls (the same closure took about 0.09 ms right after "
              "another and about 0.12 ms after a hundred small tensor calls; inside these runs 0.21 ms against "
              "LBFGS's 0.15 ms), which charges every evaluation made after a step, where half of torch.optim.LBFGS's "
              "evaluations with `max_iter=1` directly follow another. At 10⁵–10⁶ what is left is a few O(N) passes "
              "per step more than torch makes (a third inner product for the curvature test, the finiteness test "
              "of each accepted gradient, the buffer's window copy every 10 steps). The per-evaluation ratio also "
              "charges "
              f"it for needing fewer evaluations: it spends {spent} on the {a.steps} steps where LBFGS spends "
              f"{ref_calls} (about half of them repeats; the one-call column compares with LBFGS without them), so "
              f"its whole run takes {whole_txt} LBFGS's time. The paper form's per-coordinate networks run on every "
              "coordinate at every step."]
    lines += ["", "## What the target leaves the default's own step", "",
              "The per-evaluation target in the optimizer's own time per step (its share outside the closure): "
              "1.5 × torch.optim.LBFGS's ms per evaluation × the default's evaluations, less the default's time "
              "inside the closure, over the steps. torch.optim.LBFGS's own time per step beside it (per "
              "iteration for the one-call row), and the closure's time per evaluation inside each optimizer's run.",
              "",
              "| N | default: own ms per step | the target allows | torch.optim.LBFGS: own ms per step | "
              "one call: own ms per iteration | closure ms per evaluation: default / LBFGS / one call |",
              "|---:|---:|---:|---:|---:|---:|"]
    for n, r in own:
        allow = (1.5 * ref[n]["ms_per_eval"] * r["calls"] - r["closure_ms"] * r["calls"]) / r["iterations"]
        lines.append(f"| {n:,} | {r['own_ms_per_step']:.3f} | {allow:.3f} | {ref[n]['own_ms_per_step']:.3f} | "
                     f"{one[n]['own_ms_per_step']:.3f} | {r['closure_ms']:.3f} / {ref[n]['closure_ms']:.3f} / "
                     f"{one[n]['closure_ms']:.3f} |")
    lines += ["", "Where the allowance is at or below torch.optim.LBFGS's own time per step, the target asks the "
              "default's whole step — the two-loop recursion and strong-Wolfe search L-BFGS makes, plus the "
              "safeguard, restart and curvature tests, finiteness tests, stopping rules and saveable state issue 23 "
              "asks for beside it — to cost no more Python and tensor calls than torch.optim.LBFGS's: the default "
              "makes about 1.1 evaluations a step where torch.optim.LBFGS with `max_iter=1` makes 2, so 1.5× per "
              "evaluation is about 0.85× per step."]
    solved = []
    for n in a.sizes:
        for m in ("qn_bfgs", "qn", "lbfgs_one_call"):
            r = min((time_to_solution(n, m) for _ in range(max(a.repeat, 3))), key=lambda r: r["total_s"])
            solved.append((n, m, r))
            print(n, m, "to solution", r, file=sys.stderr)
    tts_names = {"qn_bfgs": "**LSR1Optimizer default**", "qn": "LSR1Optimizer, SR1 qn form (`qn_quadratic`)",
                 "lbfgs_one_call": "torch.optim.LBFGS, one `step` call"}
    ref1 = {n: r for n, m, r in solved if m == "lbfgs_one_call"}
    lines += ["", "## Time to a solution, with the default tolerances", "",
              "The same problems solved as a user would: `LSR1Optimizer` with its default tolerances (torch's "
              "`tolerance_grad` 1e-7, `tolerance_change` 1e-9) stepped until `converged`; torch.optim.LBFGS as one "
              "`step` call with its defaults (strong Wolfe, history 10, `max_iter` 200). Fastest of "
              f"{max(a.repeat, 3)} runs.", "",
              "| N | optimizer | ms | evaluations | final loss | ÷ LBFGS |", "|---:|---|---:|---:|---:|---:|"]
    for n, m, r in solved:
        ratio = "" if m == "lbfgs_one_call" else f"{r['total_s'] / ref1[n]['total_s']:.2f}×"
        lines.append(f"| {n:,} | {tts_names[m]} | {1e3 * r['total_s']:.1f} | {r['calls']} | {r['loss']:.9g} | "
                     f"{ratio} |")
    spread = [(n, interleaved(n, k, a.steps)) for n in a.sizes
              for k in [default_pairs(n) if a.pairs is None else a.pairs] if k > 0]
    if spread:
        lines += ["", "## The spread: the default and torch.optim.LBFGS taken alternately", "",
                  "Runs of the per-evaluation table's first and third rows (the default, torch.optim.LBFGS with "
                  "`max_iter=1`) taken in turn, so both see the same load; the ratio of each pair's ms per "
                  "evaluation. Timings on a shared machine move by 10–30 % from minute to minute; the ratio moves "
                  "far less. The target (≤ 1.5×) is judged on the median.", "",
                  "| N | pairs | median ÷ LBFGS per evaluation | lowest | highest |", "|---:|---:|---:|---:|---:|"]
        for n, r in spread:
            print(n, "interleaved", r, file=sys.stderr)
            lines.append(f"| {n:,} | {r['pairs']} | {r['median']:.2f}× | {r['low']:.2f}× | {r['high']:.2f}× |")
    write_report(out, "optimizer_cost", None, "\n".join(lines) + "\n", md_name="benchmarks_optimizer.md", echo=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
