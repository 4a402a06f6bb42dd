"""Inter-chunk gaps from stored raw chunk times (`[run] chunk_times = true`).

One number per row (`itl_mean_s`) cannot settle how inter-token latency is
defined; the arrival offsets of every chunk can. The report shows the
distribution of the gaps between consecutive output chunks of each ok row,
pooled per model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from llamabatch.report import resultset as rs

QUANTILES = (0.5, 0.9, 0.99)


def itl_distribution(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame | None:
    """Per model: rows with chunk times, gaps, gap p50/p90/p99 and mean (s), tokens per chunk."""
    if rs.CHUNK_TIMES not in frame or frame[rs.CHUNK_TIMES].isna().all():
        return None
    ok = frame[(frame[rs.STATUS] == rs.OK) & frame[rs.CHUNK_TIMES].notna()]
    rows = []
    for model in models:
        group = ok[ok[rs.MODEL] == model]
        if group.empty:
            continue
        gaps = _flat(np.diff(np.asarray(t, np.float64)) for t in group[rs.CHUNK_TIMES])
        tokens = _flat(np.asarray(t, np.float64) for t in group[rs.CHUNK_TOKENS].dropna())
        tokens = tokens[~np.isnan(tokens)]
        rows.append(
            {
                "model": model,
                "rows": len(group),
                "gaps": len(gaps),
                **{f"p{round(q * 100)}_s": _quantile(gaps, q) for q in QUANTILES},
                "mean_s": float(gaps.mean()) if len(gaps) else np.nan,
                "tokens_per_chunk": float(tokens.mean()) if len(tokens) else np.nan,
            }
        )
    return pd.DataFrame(rows) if rows else None


Floats = np.ndarray[Any, np.dtype[np.float64]]


def _flat(arrays: Iterable[Floats]) -> Floats:
    return np.concatenate([np.empty(0), *arrays])


def _quantile(values: Floats, q: float) -> float:
    return float(np.quantile(values, q)) if len(values) else np.nan


def itl_section(t: pd.DataFrame) -> tuple[str, list[str], list[list[Any]], str]:
    """The report's table of it: title, headers, formatted rows, note."""
    headers = ["model", "rows", "gaps", "gap p50", "gap p90", "gap p99", "gap mean", "tokens/chunk"]
    rows = [
        [r["model"], int(r["rows"]), int(r["gaps"])]
        + [_ms(r[c]) for c in ("p50_s", "p90_s", "p99_s", "mean_s")]
        + ["-" if np.isnan(r["tokens_per_chunk"]) else f"{r['tokens_per_chunk']:.1f}"]
        for r in t.to_dict("records")
    ]
    note = (
        "Gaps between consecutive output chunks of each ok row, from `chunk_times_s`; "
        "tokens/chunk where the server said (logprobs, usage on every chunk). "
        'See the README\'s "Metrics" for how other tools define inter-token latency.'
    )
    return "Inter-chunk gaps (raw chunk times)", headers, rows, note


def _ms(value: float) -> str:
    return "-" if np.isnan(value) else f"{value * 1e3:.1f} ms"
