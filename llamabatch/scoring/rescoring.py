"""Recompute the derived columns (cost, scores, judge verdicts) of stored result parts.

What `llamabatch score` does, and what a run does at its end for parts
written before its scorers existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import pyarrow as pa

from llamabatch.results import COLUMNS, result_schema
from llamabatch.results.parts import Parts
from llamabatch.results.schema import is_derived
from llamabatch.scoring.apply import Scoring


def part_schema(table_schema: pa.Schema, scoring: Scoring) -> pa.Schema:
    """A part's schema with its derived columns replaced by the current scorers' columns."""
    extras = {
        f.name: f.type for f in table_schema if f.name not in COLUMNS and not is_derived(f.name)
    }
    return result_schema(extras, scoring.fields())


def needs_rescore(table_schema: pa.Schema, scoring: Scoring) -> bool:
    """True when a part lacks a current derived column or holds a stale one."""
    have = {f.name for f in table_schema if is_derived(f.name)}
    return have != {f.name for f in scoring.fields()}


@dataclass
class RescoreReport:
    parts: int = 0
    rows: int = 0
    judged: int = 0
    judge_errors: int = 0


def rescore_rows(rows: list[dict[str, Any]], scoring: Scoring) -> None:
    for row in rows:
        scoring.apply(row)


def read_part(parts: Parts, path: str) -> tuple[pa.Schema, list[dict[str, Any]]]:
    table = parts.read(path)
    return table.schema, table.to_pylist()


def write_part(parts: Parts, path: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    parts.store(pa.Table.from_pylist(rows, schema=schema), path)


async def rescore(
    output: Path,
    scoring: Scoring,
    *,
    only_stale: bool = False,
    judge: JudgeHook | None = None,
) -> RescoreReport:
    """Recompute derived columns of every part (or only stale ones) and rewrite them."""
    report = RescoreReport()
    parts = Parts(output)  # here, or at the URI the directory stages for (s3://...)
    for path in parts.paths:
        schema = await anyio.to_thread.run_sync(parts.schema, path)
        stale = needs_rescore(schema, scoring)
        if only_stale and not stale and judge is None:
            continue
        schema, rows = await anyio.to_thread.run_sync(read_part, parts, path)
        rescore_rows(rows, scoring)
        judged = 0
        if judge is not None:
            judged, errors = await judge(rows)
            report.judged += judged
            report.judge_errors += errors
        if only_stale and not stale and not judged:
            continue  # nothing changed: leave the part as it is
        new_schema = part_schema(schema, scoring)
        await anyio.to_thread.run_sync(write_part, parts, path, rows, new_schema)
        report.parts += 1
        report.rows += len(rows)
    return report


class JudgeHook(Protocol):
    async def __call__(self, rows: list[dict[str, Any]]) -> tuple[int, int]: ...
