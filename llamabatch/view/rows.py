"""The rows page's queries: filters pushed down into the Parquet scan, one page at a time.

Only the columns a page shows are read, filters are Arrow expressions the scan
applies per batch (row groups whose statistics rule them out are skipped), and
reading stops once the page is full. So a page of a 1,000,000-row run costs a
page's worth of rows in memory, not the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from llamabatch.results.schema import SCORE_PREFIX

PAGE_SIZE: Final = 50
PREVIEW_CHARS: Final = 240
SHOWN: Final = (
    "model",
    "prompt_id",
    "sample",
    "status",
    "error_type",
    "latency_s",
    "ttft_s",
    "completion_tokens",
)
TEXT: Final = "output_text"
SEARCHED: Final = ("output_text", "reasoning_text", "prompt_id", "expected", "error_message")


@dataclass(frozen=True)
class RowQuery:
    """The filters of the rows page, as its URL's query string gives them."""

    model: str = ""
    status: str = ""
    error_type: str = ""
    score: str = ""  # a score name; with verdict
    verdict: str = ""  # "pass" or "fail"
    q: str = ""
    page: int = 0
    prompt_ids: frozenset[str] = field(default_factory=frozenset)  # prompts whose text matched q

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> RowQuery:
        try:
            page = max(0, int(params.get("page", "0")))
        except ValueError:
            page = 0
        verdict = params.get("verdict", "")
        return cls(
            model=params.get("model", ""),
            status=params.get("status", ""),
            error_type=params.get("error_type", ""),
            score=params.get("score", ""),
            verdict=verdict if verdict in ("pass", "fail") else "",
            q=params.get("q", "").strip(),
            page=page,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """This query's URL parameters (empty ones left out), with `changes` applied."""
        values = {
            "model": self.model,
            "status": self.status,
            "error_type": self.error_type,
            "score": self.score,
            "verdict": self.verdict,
            "q": self.q,
            "page": str(self.page) if self.page else "",
        }
        values.update({k: str(v) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v and v != "0"}


def expression(
    query: RowQuery, schema: pa.Schema, thresholds: Mapping[str, float]
) -> pc.Expression | None:
    """The query as one Arrow filter over `schema` (None: every row)."""
    names = set(schema.names)
    terms = []
    for column in ("model", "status", "error_type"):
        value = getattr(query, column)
        if value and column in names:
            terms.append(pc.field(column) == value)
    column = SCORE_PREFIX + query.score
    if query.verdict and column in names:
        threshold = thresholds.get(query.score, 0.5)
        passed = pc.field(column) >= threshold
        terms.append(passed if query.verdict == "pass" else ~passed)
    if query.q:
        found = [
            pc.match_substring(pc.field(c), query.q, ignore_case=True)
            for c in SEARCHED
            if c in names
        ]
        if query.prompt_ids:
            found.append(pc.field("prompt_id").isin(pa.array(sorted(query.prompt_ids))))
        terms.append(_any(found) if found else pc.scalar(False))
    if not terms:
        return None
    result = terms[0]
    for term in terms[1:]:
        result = result & term
    return result


def _any(terms: list[pc.Expression]) -> pc.Expression:
    """Any term true (Kleene logic: a null column does not hide a match in another)."""
    result = terms[0]
    for term in terms[1:]:
        result = result | term
    return result


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    has_next: bool
    total: int | None  # None when counting would mean reading every text


def read_page(
    dataset: ds.Dataset,
    query: RowQuery,
    thresholds: Mapping[str, float],
    page_size: int = PAGE_SIZE,
) -> Page:
    """Rows `page * page_size` onwards that match `query`, reading no more than needed."""
    names = dataset.schema.names
    scores = [c for c in names if c.startswith(SCORE_PREFIX)]
    columns = [c for c in (*SHOWN, *scores, TEXT) if c in names]
    filt = expression(query, dataset.schema, thresholds)
    skip, wanted = query.page * page_size, page_size + 1
    taken: list[pa.Table] = []
    scanner = dataset.scanner(columns=columns, filter=filt, batch_size=4096)
    for batch in scanner.to_batches():
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        piece = batch.slice(skip, wanted)
        skip = 0
        taken.append(pa.Table.from_batches([piece]))
        wanted -= piece.num_rows
        if wanted == 0:
            break
    table = pa.concat_tables(taken) if taken else pa.table({c: [] for c in columns})
    rows = [_preview(r) for r in table.slice(0, page_size).to_pylist()]
    total = None if query.q else dataset.count_rows(filter=filt)
    return Page(rows, table.num_rows > page_size, total)


def _preview(row: dict[str, Any]) -> dict[str, Any]:
    text = row.get(TEXT) or ""
    row[TEXT] = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"
    return row


def distinct(dataset: ds.Dataset, columns: Sequence[str]) -> dict[str, list[str]]:
    """The values each filter can offer, from one scan of those columns."""
    present = [c for c in columns if c in dataset.schema.names]
    values: dict[str, set[str]] = {c: set() for c in present}
    for batch in dataset.scanner(columns=present).to_batches():
        for column, found in values.items():
            unique = pc.unique(batch.column(column)).to_pylist()
            found.update(v for v in unique if v is not None)
    return {c: sorted(values.get(c, ())) for c in columns}


def prompt_rows(dataset: ds.Dataset, prompt_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Every stored row (all columns) of the given prompts."""
    wanted = pa.array(sorted(set(prompt_ids)), pa.string())
    table = dataset.to_table(filter=pc.field("prompt_id").isin(wanted))
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows
