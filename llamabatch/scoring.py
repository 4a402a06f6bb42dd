"""Apply scorers and prices to result rows: as rows finish, and again over stored parts.

During a run, `Scoring.sink` wraps the result writer so each row gets its
`cost_usd` and `score_<name>` values just before it is journalled. Judge
scorers call a model, so they run after the run's requests are done (see
`judge.py`); `rescore` recomputes everything over the Parquet parts of a
results directory, which is also what `llamabatch score` does.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import pyarrow as pa
import pyarrow.parquet as pq

from llamabatch.results import (
    COLUMNS,
    COST_COLUMN,
    SCORE_PREFIX,
    VERDICT_PREFIX,
    part_files,
    result_schema,
    rewrite_part,
    score_column,
    scoring_fields,
)
from llamabatch.scorers import Scorer, ScorerSpec, build_scorer

if TYPE_CHECKING:
    from llamabatch.config import RunConfig

log = logging.getLogger(__name__)
TOKENS_PER_PRICE_UNIT = 1_000_000


class Sink(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...


@dataclass
class Scoring:
    """What is added to each row: its cost and one score per scorer."""

    specs: tuple[ScorerSpec, ...] = ()
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._scorers: list[tuple[str, str, Scorer]] = [
            (spec.name, score_column(spec.name), build_scorer(spec))
            for spec in self.specs
            if spec.type != "judge"
        ]

    @classmethod
    def from_config(cls, config: RunConfig) -> Scoring:
        prices = {
            m.name: (m.usd_per_mtok["input"], m.usd_per_mtok["output"])
            for m in (*config.models, *config.judge_models)
            if m.usd_per_mtok
        }
        return cls(specs=config.scorers, prices=prices)

    @property
    def judges(self) -> tuple[ScorerSpec, ...]:
        return tuple(s for s in self.specs if s.type == "judge")

    @property
    def active(self) -> bool:
        return bool(self.specs or self.prices)

    def fields(self) -> list[pa.Field]:
        return scoring_fields(
            [s.name for s in self.specs], [j.name for j in self.judges], cost=bool(self.prices)
        )

    def apply(self, row: dict[str, Any]) -> None:
        """Set the row's cost and (non-judge) scores; a scorer that raises scores None."""
        if self.prices:
            row[COST_COLUMN] = self.cost(row)
        for name, column, scorer in self._scorers:
            try:
                row[column] = scorer(row)
            except Exception as exc:
                row[column] = None
                self.failures[name] += 1
                if self.failures[name] == 1:
                    log.warning("scorer %s failed on %s: %r", name, row.get("prompt_id"), exc)

    def cost(self, row: Mapping[str, Any]) -> float | None:
        price = self.prices.get(row["model"])
        if price is None:
            return None
        tokens_in, tokens_out = row.get("prompt_tokens"), row.get("completion_tokens")
        if tokens_in is None and tokens_out is None:
            return None
        total = (tokens_in or 0) * price[0] + (tokens_out or 0) * price[1]
        return total / TOKENS_PER_PRICE_UNIT

    def sink(self, inner: Sink) -> Sink:
        """`inner` with every row scored before it is written."""
        return _ScoringSink(self, inner) if self.active else inner


@dataclass
class _ScoringSink:
    scoring: Scoring
    inner: Sink

    def write(self, row: dict[str, Any]) -> None:
        self.scoring.apply(row)
        self.inner.write(row)


def is_derived(column: str) -> bool:
    return column == COST_COLUMN or column.startswith((SCORE_PREFIX, VERDICT_PREFIX))


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


def read_part(path: Path) -> tuple[pa.Schema, list[dict[str, Any]]]:
    table = pq.read_table(path)
    return table.schema, table.to_pylist()


def write_part(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    rewrite_part(path, pa.Table.from_pylist(rows, schema=schema))


async def rescore(
    output: Path,
    scoring: Scoring,
    *,
    only_stale: bool = False,
    judge: JudgeHook | None = None,
) -> RescoreReport:
    """Recompute derived columns of every part (or only stale ones) and rewrite them."""
    report = RescoreReport()
    for path in part_files(output):
        schema = await anyio.to_thread.run_sync(pq.read_schema, path)
        stale = needs_rescore(schema, scoring)
        if only_stale and not stale and judge is None:
            continue
        schema, rows = await anyio.to_thread.run_sync(read_part, path)
        rescore_rows(rows, scoring)
        judged = 0
        if judge is not None:
            judged, errors = await judge(rows)
            report.judged += judged
            report.judge_errors += errors
        if only_stale and not stale and not judged:
            continue  # nothing changed: leave the part as it is
        await anyio.to_thread.run_sync(write_part, path, rows, part_schema(schema, scoring))
        report.parts += 1
        report.rows += len(rows)
    return report


class JudgeHook(Protocol):
    async def __call__(self, rows: list[dict[str, Any]]) -> tuple[int, int]: ...


def specs_from_snapshot(snapshot: Mapping[str, Any]) -> tuple[ScorerSpec, ...]:
    """The scorers recorded in a manifest's config snapshot."""
    from llamabatch.scorers import parse_scorers

    tables: Sequence[Mapping[str, Any]] = snapshot.get("scorers") or []
    flat = [
        {
            **t.get("options", {}),
            "name": t["name"],
            "type": t["type"],
            "where": t.get("where") or None,
            "reduce": t.get("reduce", "mean"),
            "pass_threshold": t.get("pass_threshold", 0.5),
        }
        for t in tables
    ]
    return parse_scorers(flat, "_manifest.json")
