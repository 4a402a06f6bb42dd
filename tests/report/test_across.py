"""Reports across models and runs: headline, Pareto frontier, trend, and the fixes a new user
asked for (no `expected: nan`, no empty charts for an all-failed run, cost visible)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llamabatch.cli.commands import main
from llamabatch.report.across import non_dominated
from llamabatch.report.html import render_html
from llamabatch.report.resultset import load_results
from llamabatch.report.tables import build_report, render_markdown
from tests.evalhelpers import eval_prompts, eval_run
from tests.helpers import write_jsonl

pytestmark = pytest.mark.anyio

PRICES = {
    "cheap": {"input": 0.1, "output": 0.1},
    "pricey": {"input": 5.0, "output": 5.0},
    "wasteful": {"input": 9.0, "output": 9.0},
}


def test_non_dominated_keeps_the_frontier() -> None:
    points = [(0.9, 2.0), (0.8, 1.0), (0.7, 1.5), (0.9, 3.0), (math.nan, 0.1)]
    assert non_dominated(points) == [True, True, False, False, False]


async def test_headline_pareto_and_cost(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 20)
    accuracy = {"cheap": 0.5, "pricey": 1.0, "wasteful": 0.4}
    out = await eval_run(tmp_path / "out", prompts, accuracy, prices=PRICES)
    report = build_report(load_results([out]))
    assert report.headline[0].startswith("**pricey** leads on exact: 1.000 against 0.550")
    assert "significant, p=" in report.headline[0]
    assert any(line.startswith("**cheap** is cheapest: $") for line in report.headline)
    assert report.pareto is not None
    frontier = {p.model: p.best_on_cost for p in report.pareto.points}
    assert frontier == {"cheap": True, "pricey": True, "wasteful": False}
    markdown = render_markdown(report)
    assert "## Pareto: exact against latency and cost" in markdown
    assert "## Throughput, tokens and cost" in markdown
    assert "$ per 1,000 prompts" in markdown
    assert "rows w/o cost" not in markdown and "≥ $" not in markdown  # every ok row priced
    html = render_html(report)
    for chart in ("chart-pareto", "chart-cost", "chart-scores"):
        assert f'id="{chart}"' in html
    assert "<strong>pricey</strong> leads on exact" in html


async def test_a_cost_missing_on_some_ok_rows_is_reported_as_a_lower_bound(
    tmp_path: Path,
) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 10)
    out = await eval_run(tmp_path / "out", prompts, {"cheap": 1.0, "pricey": 1.0}, prices=PRICES)
    results = load_results([out])
    frame = results.frame
    # Ollama without prompt_eval_count: those rows' cost_usd is null, not zero.
    unpriced = frame.index[frame["model"] == "cheap"][:3]
    frame.loc[unpriced, "cost_usd"] = None
    priced_total = frame.loc[frame["model"] == "cheap", "cost_usd"].sum()
    report = build_report(results)
    table = report.models.set_index("model")
    assert table.loc["cheap", "cost_usd"] == pytest.approx(priced_total)
    assert table.loc["cheap", "cost_missing_rows"] == 3
    assert table.loc["pricey", "cost_missing_rows"] == 0
    markdown = render_markdown(report)
    volume = markdown.split("## Throughput, tokens and cost")[1].split("##")[0]
    header, _, cheap, pricey = volume.strip().splitlines()[:4]
    assert header.split(" | ")[-3:] == ["cost $", "$ per 1,000 prompts", "rows w/o cost |"]
    assert cheap.startswith("| cheap |") and cheap.count("≥ ") == 2 and cheap.endswith("| 3 |")
    assert pricey.startswith("| pricey |") and "≥" not in pricey and pricey.endswith("| - |")
    assert "is cheapest: ≥ $" in markdown  # the headline says so too
    assert "<td>≥ " in render_html(report)


async def test_a_model_with_no_cost_at_all_shows_none_not_a_lower_bound(tmp_path: Path) -> None:
    # One model priced, one not (no usd_per_mtok): the unpriced one's total is unknown,
    # not "at least nothing" ("≥ -" in the tables, a "≥" bar of 0 in the chart).
    prompts = eval_prompts(tmp_path / "p.jsonl", 10)
    out = await eval_run(tmp_path / "out", prompts, {"cheap": 1.0, "pricey": 1.0}, prices=PRICES)
    results = load_results([out])
    frame = results.frame
    frame.loc[frame["model"] == "cheap", "cost_usd"] = None
    report = build_report(results)
    markdown = render_markdown(report)
    volume = markdown.split("## Throughput, tokens and cost")[1].split("##")[0]
    cheap = next(line for line in volume.splitlines() if line.startswith("| cheap |"))
    assert "≥" not in cheap and cheap.endswith("| - | - | 10 |"), cheap
    assert "≥ cheap" not in render_html(report)


async def test_four_runs_of_one_config_make_a_trend(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 10)
    runs = []
    for i, acc in enumerate((1.0, 0.9, 0.6, 0.3)):
        name = "baseline" if i == 0 else f"night{i}"
        runs.append(
            await eval_run(tmp_path / name, prompts, {"m": acc, "n": 1.0}, name="nightly", seed=i)
        )
    report = build_report(load_results(runs))
    assert report.trend is not None
    assert [r.label for r in report.trend.runs] == ["baseline", "night1", "night2", "night3"]
    assert report.trend.baseline == 0
    m_scores = [p.score for p in report.trend.points if p.model == "m"]
    assert m_scores == sorted(m_scores, reverse=True) and m_scores[0] == 1.0
    # Like with like: each model against its namesake in the first run, never m against n.
    pairs = [(p.a, p.b) for p in report.latency_pairs]
    assert len(pairs) == 6 and all(a.split("/")[1] == b.split("/")[1] for a, b in pairs)
    html = tmp_path / "r.html"
    assert main(["report", *map(str, runs), "-o", str(html), "--pareto-score", "exact"]) == 0
    text = html.read_text()
    assert 'id="chart-trend"' in text and 'id="chart-pareto"' in text
    assert "baseline (baseline)" in text


async def test_unknown_pareto_score_is_a_usage_error(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 3)
    out = await eval_run(tmp_path / "out", prompts, {"m": 1.0})
    assert main(["report", str(out), "--pareto-score", "nope"]) == 2


async def test_prompts_without_expected_show_none(tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"id": "a", "prompt": "Hi"}])
    one = await eval_run(tmp_path / "one", plain, {"m": 1.0}, scorers=[])
    two = await eval_run(tmp_path / "two", eval_prompts(tmp_path / "p.jsonl", 2), {"m": 1.0})
    html = render_html(build_report(load_results([one, two])))
    assert "expected:</b> nan" not in html and "nan" not in html.lower().replace("nano", "")
    assert "<b>expected:</b> 1" in html


async def test_an_all_failed_run_draws_no_empty_charts(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 5)
    out = await eval_run(
        tmp_path / "out", prompts, {"a": 1.0, "b": 1.0}, error_rate={"a": 1.0, "b": 1.0}
    )
    report = build_report(load_results([out]))
    assert report.headline == [
        "No request succeeded: there is nothing to compare (see the errors below)."
    ]
    html = render_html(report)
    assert 'id="chart-errors"' in html
    for empty in ("chart-ttft", "chart-latency", "chart-throughput", "chart-scores"):
        assert f'id="{empty}"' not in html
    assert "No request succeeded: no timing or throughput charts." in html
