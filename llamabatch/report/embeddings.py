"""The report's table of embedding models (`task = "embed"`): throughput, latency, errors.

Rows with a `dimensions` value are embeddings; one request carried several of
them, so latency is a request's and throughput is counted in inputs and in
tokens per second of the model's wall time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from llamabatch.report import resultset as rs


def embedding_summary(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame | None:
    """Per embedding model: rows, ok, errors, inputs/s, tokens/s, latency p50/p90, dimensions."""
    if rs.DIMENSIONS not in frame or frame[rs.DIMENSIONS].isna().all():
        return None
    rows = []
    for model in models:
        group = frame[frame[rs.MODEL] == model]
        if group.empty or group[rs.DIMENSIONS].isna().all():
            continue
        ok = group[group[rs.STATUS] == rs.OK]
        span = (group[rs.FINISHED].max() - group[rs.STARTED].min()).total_seconds()
        kinds = group[rs.ERROR_TYPE].dropna().value_counts()
        rows.append(
            {
                "model": model,
                "rows": len(group),
                "ok": len(ok),
                "errors": ", ".join(f"{k} {v}" for k, v in kinds.items()) or "-",
                "inputs_per_s": len(ok) / span if span > 0 else np.nan,
                "tokens_per_s": ok[rs.PROMPT_TOKENS].sum() / span if span > 0 else np.nan,
                "latency_p50_s": ok[rs.LATENCY].quantile(0.5),
                "latency_p90_s": ok[rs.LATENCY].quantile(0.9),
                "dimensions": ", ".join(str(int(d)) for d in sorted(ok[rs.DIMENSIONS].unique())),
            }
        )
    return pd.DataFrame(rows) if rows else None


def embedding_section(t: pd.DataFrame) -> tuple[str, list[str], list[list[Any]], str]:
    """The report's table of it: title, headers, formatted rows, note."""
    headers = ["model", "rows", "ok", "errors", "inputs/s", "tokens/s"]
    headers += ["request latency p50", "request latency p90", "dimensions"]
    rows = [
        [
            r["model"],
            int(r["rows"]),
            int(r["ok"]),
            r["errors"],
            _one(r["inputs_per_s"]),
            _one(r["tokens_per_s"]),
            _seconds(r["latency_p50_s"]),
            _seconds(r["latency_p90_s"]),
            r["dimensions"] or "-",
        ]
        for r in t.to_dict("records")
    ]
    note = (
        "Inputs and prompt tokens embedded per second of the model's wall time (first start "
        "to last finish); latency is that of the request each input rode in."
    )
    return "Embeddings", headers, rows, note


def _one(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:,.1f}"


def _seconds(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.3f}s"
