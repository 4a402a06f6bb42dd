"""The report's first lines: which model wins on what, by how much, with what confidence."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from llamabatch.report import resultset as rs
from llamabatch.report.stats import CONFIDENCE, paired_diff, quantile_ratio
from llamabatch.report.summary import UNPRICED, at_least

MAX_SCORES: int = 3  # a headline, not a table: the first scores only


def headline(
    table: pd.DataFrame,
    prompt_scores: Mapping[str, pd.Series],
    latency: pd.Series,
) -> list[str]:
    """Sentences for the top of the report (Markdown emphasis on model names)."""
    records = [{str(k): v for k, v in r.items()} for r in table.to_dict("records")]
    rows = {str(r["model"]): r for r in records}
    if sum(int(r["ok"]) for r in rows.values()) == 0:
        return ["No request succeeded: there is nothing to compare (see the errors below)."]
    if len(rows) < 2:
        return []
    lines = [_score_line(s, per) for s, per in list(prompt_scores.items())[:MAX_SCORES]]
    lines.append(_latency_line(rows, latency))
    lines.append(_cost_line(rows))
    worst = min(rows.values(), key=lambda r: float(r["ok_pct"]))
    if worst["ok_pct"] < 100:
        lines.append(
            f"**{worst['model']}** has the most errors: {100 - worst['ok_pct']:.1f}% of its "
            f"rows failed ({worst['error_types']})."
        )
    return [line for line in lines if line]


def _ranked(values: Mapping[str, float], *, ascending: bool) -> list[str]:
    known = [m for m, v in values.items() if not math.isnan(v)]
    return sorted(known, key=lambda m: values[m] if ascending else -values[m])


def _column(rows: Mapping[str, Mapping[str, Any]], column: str) -> dict[str, float]:
    return {m: float(r.get(column, math.nan)) for m, r in rows.items()}


def _score_line(score: str, per_prompt: pd.Series) -> str:
    if per_prompt.empty:
        return ""
    means = {str(m): float(v) for m, v in per_prompt.groupby(level=0, sort=False).mean().items()}
    ranked = _ranked(means, ascending=False)
    if len(ranked) < 2:
        return ""
    best, second = ranked[0], ranked[1]
    test = paired_diff(*rs.paired(per_prompt, second, best))
    if test.diff.n == 0:
        return (
            f"**{best}** leads on {score}: {means[best]:.3f} against {means[second]:.3f} for "
            f"**{second}** (no shared prompts to test the difference on)."
        )
    lead = f"{test.diff.value:+.3f}"
    if not math.isnan(test.diff.low):
        lead += f" [{test.diff.low:+.3f}, {test.diff.high:+.3f}]"
    verdict = (
        f"significant, p={test.p_value:.2g}"
        if test.significant(1 - CONFIDENCE)
        else f"not significant, p={test.p_value:.2g}: could be a tie"
    )
    return (
        f"**{best}** leads on {score}: {means[best]:.3f} against {means[second]:.3f} for "
        f"**{second}** ({lead} on {test.diff.n} shared prompts; {verdict})."
    )


def _latency_line(rows: Mapping[str, Mapping[str, Any]], latency: pd.Series) -> str:
    p50 = _column(rows, "latency_p50_s")
    ranked = _ranked(p50, ascending=True)
    if len(ranked) < 2:
        return ""
    best, second = ranked[0], ranked[1]
    ratio = quantile_ratio(*rs.paired(latency, second, best))
    if ratio.n == 0 or math.isnan(ratio.value):
        return (
            f"**{best}** is fastest: latency p50 {p50[best]:.3f}s against {p50[second]:.3f}s "
            f"for **{second}** (no shared prompts to test the difference on)."
        )
    interval = "" if math.isnan(ratio.low) else f" [{ratio.low:.2f}, {ratio.high:.2f}]"
    confident = "" if ratio.excludes(1.0) else "; the interval includes 1: not significant"
    return (
        f"**{best}** is fastest: latency p50 {p50[best]:.3f}s against {p50[second]:.3f}s for "
        f"**{second}** "
        f"(×{ratio.value:.2f}{interval} on shared prompts{confident})."
    )


def _cost_line(rows: Mapping[str, Mapping[str, Any]]) -> str:
    cost = _column(rows, "cost_per_1k")
    ranked = _ranked(cost, ascending=True)
    if len(ranked) < 2:
        return ""
    best, second = ranked[0], ranked[1]
    low, high = cost[best], cost[second]
    ratio = f" (×{low / high:.2f})" if high > 0 else ""
    low_text = at_least(f"${low:.4f}", rows[best].get(UNPRICED))
    high_text = at_least(f"${high:.4f}", rows[second].get(UNPRICED))
    return (
        f"**{best}** is cheapest: {low_text} per 1,000 prompts against {high_text} for "
        f"**{second}**{ratio}."
    )
