"""The end-of-run summary: rates per run segment, score means and cost."""

from __future__ import annotations

import pandas as pd
import pytest

from llamabatch.report.summary import format_table, summarize


def rows(run_id: str, start: str, n: int, seconds: float) -> list[dict[str, object]]:
    """`n` ok rows of 10 output tokens, spread over `seconds` from `start`."""
    t0 = pd.Timestamp(start, tz="UTC")
    step = seconds / n
    return [
        {
            "run_id": run_id,
            "model": "m",
            "prompt_id": f"{run_id}-{i}",
            "status": "ok",
            "completion_tokens": 10,
            "ttft_s": 0.1,
            "latency_s": step,
            "decode_tps": 50.0,
            "started_at": t0 + pd.Timedelta(seconds=i * step),
            "finished_at": t0 + pd.Timedelta(seconds=(i + 1) * step),
            "score_exact": float(i % 2),
            "cost_usd": 0.001,
        }
        for i in range(n)
    ]


def test_throughput_after_a_resume_is_per_run_segment() -> None:
    # 100 rows in 10 s, an hour's pause, then 100 rows in 10 s: 2,000 tokens in 20 s of work.
    df = pd.DataFrame(
        rows("a", "2026-01-01T00:00:00", 100, 10) + rows("b", "2026-01-01T01:00:00", 100, 10)
    )
    table = summarize(df)
    assert table.loc[0, "output_tok_s"] == pytest.approx(100.0)
    one_run = summarize(pd.DataFrame(rows("a", "2026-01-01T00:00:00", 100, 10)))
    assert one_run.loc[0, "output_tok_s"] == pytest.approx(100.0)


def test_scores_and_cost_only_when_asked() -> None:
    df = pd.DataFrame(rows("a", "2026-01-01T00:00:00", 10, 5))
    assert "score_exact" not in summarize(df).columns  # report tables add their own
    table = summarize(df, scores=True)
    assert table.loc[0, "score_exact"] == pytest.approx(0.5)
    assert table.loc[0, "cost_usd"] == pytest.approx(0.01)
    header, _, line = format_table(table).splitlines()
    assert header.split()[-3:] == ["exact", "mean", "cost"]
    assert line.split()[-2:] == ["0.500", "$0.01"]


def test_no_cost_column_without_prices() -> None:
    df = pd.DataFrame(rows("a", "2026-01-01T00:00:00", 4, 2)).assign(cost_usd=None)
    assert "cost_usd" not in summarize(df, scores=True).columns


def test_a_cost_missing_on_some_ok_rows_is_shown_as_a_lower_bound() -> None:
    # Ollama without prompt_eval_count: those rows' cost_usd is null, not zero.
    priced = rows("a", "2026-01-01T00:00:00", 10, 5)
    for row in priced[:3]:
        row["cost_usd"] = None
    table = summarize(pd.DataFrame(priced), scores=True)
    assert table.loc[0, "cost_usd"] == pytest.approx(0.007)
    assert table.loc[0, "cost_missing_rows"] == 3
    header, _, line = format_table(table).splitlines()
    assert header.endswith("cost  rows w/o cost")
    assert line.split()[-4:] == ["0.500", "≥", "$0.007", "3"]


def test_whole_cost_has_no_missing_column() -> None:
    table = summarize(pd.DataFrame(rows("a", "2026-01-01T00:00:00", 4, 2)), scores=True)
    assert "cost_missing_rows" not in table.columns
