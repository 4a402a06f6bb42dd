"""The result row schema: one row per (model, prompt_id, sample, turn), as a pyarrow schema.

Reports, compare and the viewer read column names from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import pyarrow as pa

# One row per key; `turn` is null except in multi-turn conversations (1, 2, ...).
TURN: Final = "turn"
KEY: Final = ("model", "prompt_id", "sample", TURN)

_TS = pa.timestamp("us", tz="UTC")
FIXED_FIELDS: Final = (
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("provider", pa.string(), nullable=False),
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("prompt_hash", pa.string()),
    pa.field("sample", pa.int32(), nullable=False),
    pa.field("turn", pa.int32()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error_type", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("http_status", pa.int32()),
    pa.field("attempts", pa.int32(), nullable=False),
    pa.field("output_text", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("reasoning_text", pa.string()),
    pa.field("tool_calls", pa.string()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("reasoning_tokens", pa.int64()),
    pa.field("usage_source", pa.string()),  # the less exact of the two sources below
    pa.field("prompt_tokens_source", pa.string()),
    pa.field("completion_tokens_source", pa.string()),
    pa.field("queue_s", pa.float64(), nullable=False),
    pa.field("ttft_s", pa.float64()),
    pa.field("latency_s", pa.float64()),  # null for Batch API rows (not measured)
    pa.field("decode_tps", pa.float64()),
    pa.field("itl_mean_s", pa.float64()),
    pa.field("ttfb_s", pa.float64()),
    pa.field("ttfa_s", pa.float64()),
    pa.field("chunk_times_s", pa.list_(pa.float32())),  # only with [run] chunk_times
    pa.field("chunk_tokens", pa.list_(pa.int32())),
    pa.field("embedding", pa.list_(pa.float32())),  # only for task = "embed"
    pa.field("dimensions", pa.int32()),
    pa.field("server_prompt_s", pa.float64()),
    pa.field("server_decode_s", pa.float64()),
    pa.field("server_load_s", pa.float64()),
    pa.field("started_at", _TS, nullable=False),
    pa.field("finished_at", _TS, nullable=False),
    pa.field("scheduled_at", _TS),
    pa.field("request_params", pa.string(), nullable=False),
    pa.field("expected", pa.string()),
    pa.field("notes", pa.string()),  # what was changed in the row: usage discarded, redactions
    pa.field("batch_id", pa.string()),  # the provider's batch, for rows answered by a Batch API
    pa.field("cached", pa.bool_()),  # answered from the response cache: nothing was sent
)
COLUMNS: Final = tuple(f.name for f in FIXED_FIELDS)
# What a request's own timing says: null for Batch API rows (not measured), and left out
# of reports' latency statistics for cached rows (measured by an earlier run).
TIMING_COLUMNS: Final = ("ttft_s", "latency_s", "decode_tps", "itl_mean_s", "ttfb_s", "ttfa_s")

# Columns that exist only when the config asks for them (scorers, prices).
SCORE_PREFIX: Final = "score_"
VERDICT_PREFIX: Final = "verdict_"  # a judge's raw verdict, as JSON text
COST_COLUMN: Final = "cost_usd"


def score_column(scorer: str) -> str:
    return SCORE_PREFIX + scorer


def verdict_column(scorer: str) -> str:
    return VERDICT_PREFIX + scorer


def scoring_fields(
    scorers: Iterable[str], judges: Iterable[str] = (), *, cost: bool = False
) -> list[pa.Field]:
    """The derived columns: cost_usd, then score_<name> per scorer and verdict_<name> per judge."""
    fields = [pa.field(COST_COLUMN, pa.float64())] if cost else []
    fields += [pa.field(score_column(name), pa.float64()) for name in scorers]
    fields += [pa.field(verdict_column(name), pa.string()) for name in judges]
    return fields


def result_schema(
    extra_types: Mapping[str, pa.DataType] | None = None, derived: Iterable[pa.Field] = ()
) -> pa.Schema:
    """The fixed columns, the derived (score/cost) columns, then the carried-through columns."""
    derived = list(derived)
    taken = {*COLUMNS, *(f.name for f in derived)}
    extras = [pa.field(name, t) for name, t in (extra_types or {}).items() if name not in taken]
    return pa.schema([*FIXED_FIELDS, *derived, *extras])


def is_derived(column: str) -> bool:
    """Columns computed from a row after the fact: cost, scores, judge verdicts."""
    return column == COST_COLUMN or column.startswith((SCORE_PREFIX, VERDICT_PREFIX))
