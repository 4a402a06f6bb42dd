"""The short per-model table printed at the end of a run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from llamabatch.results.schema import COST_COLUMN, SCORE_PREFIX, TIMING_COLUMNS

UNPRICED = "cost_missing_rows"  # ok rows without a cost: the cost is then a lower bound


def without_cached_timings(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with the timings of cached rows blanked: they were measured by an earlier run."""
    if "cached" not in df or not df["cached"].fillna(False).astype(bool).any():
        return df
    cached = df["cached"].fillna(False).astype(bool)
    df = df.copy()
    for column in TIMING_COLUMNS:
        if column in df:
            df[column] = df[column].mask(cached)
    return df


def active_span_s(group: pd.DataFrame, start: str = "started_at") -> float:
    """Seconds the rows' runs were working: each run's (run_id's) own span, added up.

    A resumed directory holds rows of several runs; the time between them
    (hours, maybe) is no one's work, so a rate over the whole span would be low.
    """
    if "run_id" not in group:
        return float((group["finished_at"].max() - group[start].min()).total_seconds())
    spans = group.groupby("run_id", sort=False).agg(
        first=(start, "min"), last=("finished_at", "max")
    )
    return float((spans["last"] - spans["first"]).dt.total_seconds().sum())


def summarize(
    df: pd.DataFrame,
    models: Sequence[str] | None = None,
    slo: Mapping[str, float] | None = None,
    *,
    scores: bool = False,
) -> pd.DataFrame:
    """One row per model: counts, TTFT and latency percentiles, output tokens per second.

    Open-loop rows (with `scheduled_at`) add the achieved request rate and the
    p99 delay between a request's scheduled and actual start; `slo` adds the
    share of rows meeting every objective and the goodput (such rows per second).
    Rates are over each run's own span (see `active_span_s`). With `scores`:
    each score's mean (`score_<name>`) and the cost (`cost_usd`), where present.
    """
    if models:
        df = df[df["model"].isin(models)]
    df = without_cached_timings(df)
    any_cached = "cached" in df and bool(df["cached"].fillna(False).astype(bool).any())
    any_batch = "batch_id" in df and bool(df["batch_id"].notna().any())
    rows = []
    for model, group in df.groupby("model", sort=False):
        ok = group[group["status"] == "ok"]
        span = active_span_s(group)
        tokens = ok["completion_tokens"].sum(min_count=1)  # none at all for embeddings
        rows.append(
            {
                "model": model,
                "rows": len(group),
                "ok": len(ok),
                "errors": len(group) - len(ok),
                **({"cached": int(group["cached"].fillna(False).sum())} if any_cached else {}),
                **({"batch": int(group["batch_id"].notna().sum())} if any_batch else {}),
                "ttft_p50_s": ok["ttft_s"].quantile(0.5),
                "ttft_p90_s": ok["ttft_s"].quantile(0.9),
                "latency_p50_s": ok["latency_s"].quantile(0.5),
                "latency_p90_s": ok["latency_s"].quantile(0.9),
                "decode_tok_s_p50": ok["decode_tps"].quantile(0.5),
                "output_tok_s": tokens / span if span > 0 else float("nan"),
                **_open_loop(group),
                **_goodput(group, slo, span),
                **(_scores_and_cost(df, group) if scores else {}),
            }
        )
    table = pd.DataFrame(rows)
    if UNPRICED in table and not table[UNPRICED].any():
        table = table.drop(columns=UNPRICED)  # every ok row priced: the totals are whole
    if models and not table.empty:
        order = {name: i for i, name in enumerate(models)}
        table = table.sort_values("model", key=lambda s: s.map(order)).reset_index(drop=True)
    return table


def _scores_and_cost(df: pd.DataFrame, group: pd.DataFrame) -> dict[str, float]:
    """Each score's mean over the rows it scored, and the model's total cost.

    A row without a cost (a count the server did not send) is not free: the
    total is then a lower bound, and `UNPRICED` says how many ok rows it misses.
    """
    found = {c: float(group[c].mean()) for c in df.columns if c.startswith(SCORE_PREFIX)}
    if COST_COLUMN in df and df[COST_COLUMN].notna().any():
        found.update(cost_total(group))
    return found


def cost_total(group: pd.DataFrame) -> dict[str, float]:
    """The rows' total cost (NaN when none has one) and `UNPRICED`: ok rows without a cost."""
    cost = group[COST_COLUMN]
    unpriced = (group["status"] == "ok") & cost.isna()
    return {COST_COLUMN: float(cost.sum(min_count=1)), UNPRICED: int(unpriced.sum())}


def at_least(text: str, unpriced: object) -> str:
    """`text` (an amount) marked as a lower bound when some ok rows have no cost."""
    return "≥ " + text if unpriced else text


def _open_loop(group: pd.DataFrame) -> dict[str, float]:
    if "scheduled_at" not in group or group["scheduled_at"].isna().all():
        return {}
    # Each run's first request starts its span: (requests - runs) gaps in the runs' spans.
    span = active_span_s(group.assign(finished_at=group["started_at"]))
    gaps = len(group) - (group["run_id"].nunique() if "run_id" in group else 1)
    delay = (group["started_at"] - group["scheduled_at"]).dt.total_seconds()
    return {
        "sent_req_s": gaps / span if span > 0 else float("nan"),
        "start_delay_p99_s": float(delay.quantile(0.99)),
    }


def meets_slo(group: pd.DataFrame, slo: Mapping[str, float]) -> pd.Series:
    """Rows that succeeded within every objective (TTFT, time per output token, latency)."""
    good = group["status"] == "ok"
    if "ttft_s" in slo:
        good &= group["ttft_s"] <= slo["ttft_s"]
    if "tpot_s" in slo:
        good &= (1.0 / group["decode_tps"]).fillna(0.0) <= slo["tpot_s"]
    if "latency_s" in slo:
        good &= group["latency_s"] <= slo["latency_s"]
    return good


def _goodput(group: pd.DataFrame, slo: Mapping[str, float] | None, span: float) -> dict[str, float]:
    if not slo:
        return {}
    good = int(meets_slo(group, slo).sum())
    return {
        "slo_pct": 100.0 * good / len(group),
        "goodput_req_s": good / span if span > 0 else float("nan"),
    }


def format_table(table: pd.DataFrame) -> str:
    """A plain fixed-width rendering (no extra dependencies)."""
    if table.empty:
        return "(no rows)"
    headers = {
        "model": "model",
        "rows": "rows",
        "ok": "ok",
        "errors": "errors",
        "cached": "cached",
        "batch": "via batch",
        "ttft_p50_s": "TTFT p50",
        "ttft_p90_s": "TTFT p90",
        "latency_p50_s": "latency p50",
        "latency_p90_s": "latency p90",
        "decode_tok_s_p50": "decode tok/s p50",
        "output_tok_s": "output tok/s",
        "sent_req_s": "sent req/s",
        "start_delay_p99_s": "start delay p99",
        "slo_pct": "SLO met %",
        "goodput_req_s": "goodput req/s",
        COST_COLUMN: "cost",
        UNPRICED: "rows w/o cost",
    }
    cells = [[_header(headers, c) for c in table.columns]]
    for record in table.to_dict("records"):
        cells.append([_cell(c, record[c], record.get(UNPRICED)) for c in table.columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


_SECONDS = frozenset(
    {"ttft_p50_s", "ttft_p90_s", "latency_p50_s", "latency_p90_s", "start_delay_p99_s"}
)


def _header(headers: Mapping[str, str], column: str) -> str:
    if column.startswith(SCORE_PREFIX):
        return column.removeprefix(SCORE_PREFIX) + " mean"
    return headers.get(column, column)


def _cell(column: str, value: object, unpriced: object = None) -> str:
    if column == COST_COLUMN and isinstance(value, float) and not math.isnan(value) and unpriced:
        return at_least(_cell(column, value), unpriced)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if column in _SECONDS:
            return f"{value:.3f}s"
        if column.startswith(SCORE_PREFIX):
            return f"{value:.3f}"
        if column == COST_COLUMN:
            return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"
        return f"{value:.1f}"
    return str(value)
