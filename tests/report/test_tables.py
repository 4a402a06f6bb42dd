"""`llamabatch report`: tables from real runs, pairwise verdicts, several directories, repeats."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabatch.cli.commands import main
from llamabatch.errors import UsageError
from llamabatch.report.resultset import load_results
from llamabatch.report.tables import build_report, render_markdown
from tests.evalhelpers import eval_prompts, eval_run

pytestmark = pytest.mark.anyio


async def test_model_table_and_a_significant_score_difference(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 30)
    out = await eval_run(tmp_path / "out", prompts, {"good": 1.0, "bad": 0.0})
    report = build_report(load_results([out]))
    table = report.models.set_index("model")
    assert table.loc["good", "rows"] == 30 and table.loc["good", "ok_pct"] == 100.0
    assert report.scores["exact"]["good"].value == 1.0
    assert report.scores["exact"]["bad"].value == 0.0
    (pair,) = report.score_pairs
    assert (pair.a, pair.b) == ("good", "bad")
    assert pair.result.losses == 30 and pair.result.significant()
    assert pair.verdict == "good better"
    markdown = render_markdown(report)
    assert "| good | 30 | 100.0 | - |" in markdown
    assert (
        "| exact | bad vs good | 30 | 1.000 → 0.000 | -1.000 [-1.000, -1.000] | 0/0/30 |"
        in markdown
    )
    assert "good better" in markdown


async def test_equal_models_are_reported_as_not_significant(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 20)
    out = await eval_run(tmp_path / "out", prompts, {"a": 0.7, "b": 0.65})
    report = build_report(load_results([out]))
    assert [p.verdict for p in report.score_pairs] == ["not significant"]
    assert "not significant" in render_markdown(report)


async def test_errors_by_type_and_latency_verdict(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 20)
    out = await eval_run(
        tmp_path / "out",
        prompts,
        {"fast": 1.0, "slow": 1.0},
        ttft_s={"fast": 0.0, "slow": 1.0},  # far above a loaded machine's scheduling noise
        error_rate={"fast": 0.3},
    )
    report = build_report(load_results([out]))
    table = report.models.set_index("model")
    assert table.loc["fast", "error_types"].startswith("server ")
    assert table.loc["fast", "ok_pct"] < 100.0
    (latency,) = report.latency_pairs
    assert latency.latency.value > 1.0 and latency.verdict == "fast faster"


async def test_several_directories_label_clashing_models(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 10)
    one = await eval_run(tmp_path / "run1", prompts, {"m": 1.0})
    two = await eval_run(tmp_path / "run2", prompts, {"m": 0.0, "other": 1.0})
    results = load_results([one, two])
    assert results.models == ["run1/m", "run2/m", "other"]
    report = build_report(results)
    # Across runs, a model is compared with its namesake only, not with every other model.
    assert [(p.a, p.b) for p in report.latency_pairs] == [("run1/m", "run2/m")]
    assert [(p.a, p.b) for p in report.score_pairs] == [("run1/m", "run2/m")]
    assert "| run1/m | 10 |" in render_markdown(report)


async def test_repeats_show_reducers(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 10)
    out = await eval_run(tmp_path / "out", prompts, {"m": 0.5}, repeats=4, temperature=0.7)
    report = build_report(load_results([out]))
    assert report.reducers is not None
    (row,) = report.reducers.to_dict("records")
    assert row["samples"] == 4
    assert 0.0 <= row["pass@1"] <= row["pass@4"] <= 1.0
    assert row["pass@1"] == pytest.approx(row["mean"])  # binary scores: pass@1 is the mean
    assert "## Repeats: per-prompt reducers" in render_markdown(report)


def test_missing_results_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a results directory"):
        load_results([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no results"):
        load_results([tmp_path / "empty"])


async def test_cli_report_writes_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 5)
    out = await eval_run(tmp_path / "out", prompts, {"m": 1.0})
    assert main(["report", str(out), "-o", str(tmp_path / "r.md")]) == 0
    stdout = capsys.readouterr().out
    assert stdout == (tmp_path / "r.md").read_text()
    assert stdout.startswith("# llamabatch report")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a results directory" in capsys.readouterr().err
