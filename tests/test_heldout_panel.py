"""The Meta-training page's held-out comparison panel (issue 22, part 6): figure, table, verdict and the choice of
checkpoints, which skips anything that is not a readable qn card."""
import json
from types import SimpleNamespace

from explorer.views.heldout import comparison_figure, qn_candidates, table_rows, verdict


def _ci(m, half=0.1):
    return {"mean": m, "lo": m - half, "hi": m + half, "n": 8}


def _h(delta):
    rows = [{"budget": b, "trained": _ci(-1 - delta * i), "untrained": _ci(-1), "lbfgs": _ci(-1.2),
             "trained_vs_untrained": _ci(-delta * i), "trained_vs_lbfgs": _ci(0.2 - delta * i)}
            for i, b in enumerate((16, 32, 64))]
    mob = {k: _ci(sum(r[k]["mean"] for r in rows) / 3, 0.05) for k in rows[0] if k != "budget"}
    return {"family": "logistic", "problems": 8, "budgets": [16, 32, 64], "rows": rows, "mean_over_budgets": mob}


def test_figure_table_and_verdict_follow_the_numbers():
    h = _h(1.0)
    fig = comparison_figure(h)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["this checkpoint", "its untrained start", "L-BFGS (strong Wolfe)"]
    assert list(lines[0].y) == [-1.0, -2.0, -3.0]
    rows = table_rows(h)
    assert [r["evaluations"] for r in rows] == ["16", "32", "64", "mean"]
    assert rows[2]["checkpoint − untrained"] == "-2.00 [-2.10, -1.90]"
    assert verdict(h).startswith("Learning paid: -1.00")
    assert verdict(_h(0.0)).startswith("No measurable gain")
    assert verdict(_h(-1.0)).startswith("Learning made it worse")


def test_candidates_are_qn_cards_and_qn_runs_only(tmp_path):
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "good.json").write_text(json.dumps({"config": {"form": "qn"}}))
    (pre / "paper.json").write_text(json.dumps({"config": {"form": "paper"}}))
    (pre / "broken.json").write_text("{not json")
    (pre / "list.json").write_text("[1, 2]")
    (pre / "huge.json").write_bytes(b" " * (5 << 20))
    (pre / "dir.json").mkdir()
    run = tmp_path / "run1"
    run.mkdir()
    (run / "best.json").write_text(json.dumps({"config": {"form": "qn"}}))
    hmr = tmp_path / "run2"
    hmr.mkdir()
    (hmr / "best.json").write_text(json.dumps({"config": {"form": "qn"}}))
    runs = [SimpleNamespace(run_id="run1", path=run, kind="lsr1"), SimpleNamespace(run_id="run2", path=hmr, kind="hmr"),
            SimpleNamespace(run_id="run3", path=tmp_path / "missing", kind="lsr1")]
    c = qn_candidates(runs, pre)
    assert c == {"shipped: good": pre / "good", "run: run1": run / "best"}


def test_the_panel_starts_on_the_quickest_clear_example(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LSR1_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("LSR1_PAGE_DIRECT", "1")
    page = Path(__file__).resolve().parents[1] / "explorer" / "views" / "training.py"
    at = AppTest.from_file(str(page), default_timeout=120).run()
    assert not at.exception
    box = next(sb for sb in at.selectbox if sb.label == "Checkpoint")
    assert box.value == "shipped: qn_logistic"
