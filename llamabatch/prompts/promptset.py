"""Prompt sets: stream rows from JSON, Parquet or CSV in any known format; validate them."""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from llamabatch.errors import PromptError
from llamabatch.prompts.formats import DETECT_ROWS, Layout, Pipeline, describe
from llamabatch.prompts.prompt import Prompt, RowError, id_hash, parse_row
from llamabatch.prompts.readers import BATCH_ROWS, file_kind, read_records, wanted

MAX_REPORTED_ERRORS: Final = 20
# A run's validation pass keeps the prompts of a file this small (in bytes and in valid
# rows), so the requests are built from them rather than from a second read and parse
# of the file (~6 µs a row); a larger file is read again, batch by batch: memory stays
# bounded however long the prompt set (32,768 one-line prompts kept take ~24 MB).
KEEP_BYTES: Final = 4 * 2**20
KEEP_ROWS: Final = 32_768


@dataclass(kw_only=True)
class ScanReport:
    """What a full validation pass found."""

    path: Path
    rows: int = 0
    valid: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    skipped_rows: set[int] = field(default_factory=set)
    extra_types: dict[str, pa.DataType] = field(default_factory=dict)
    format: str = "rows"  # the dataset format the rows were read as
    turn_rows: int = 0  # result rows a sample of the valid prompts makes: one per turn
    dropped: dict[str, int] = field(default_factory=dict)  # OpenAI Batch body keys dropped
    max_errors: int | None = MAX_REPORTED_ERRORS  # messages kept (None: all)

    def add_error(self, message: str, row: int) -> None:
        self.error_count += 1
        self.skipped_rows.add(row)
        if self.max_errors is None or len(self.errors) < self.max_errors:
            self.errors.append(message)

    def describe(self) -> str:
        """One line: the file, its format and how many rows (`x.json: ShareGPT format, 3
        conversations`)."""
        return describe(self.path, self.format, self.rows, self.error_count, self.dropped)

    def raise_if_invalid(self) -> None:
        """Raise one PromptError naming the first problem (and how many more)."""
        if not self.error_count:
            return
        more = self.error_count - 1
        suffix = f" (and {more} more problem{'s' if more != 1 else ''}; " if more else " ("
        raise PromptError(
            f"{self.errors[0]}{suffix}run `llamabatch validate {self.path}` to list them, "
            "or set run.skip_invalid = true to skip invalid rows)"
        )


class PromptSet:
    """A prompt file read as a stream; `scan()` validates it whole, iteration yields prompts."""

    def __init__(
        self, path: str | Path, *, limit: int | None = None, layout: Layout | None = None
    ) -> None:
        self.path = Path(path)
        self.kind = file_kind(self.path)  # jsonl, json-array, parquet or csv
        self.layout = layout or Layout()
        self.limit = limit
        self.report: ScanReport | None = None
        self._pipeline: Pipeline | None = None
        self._kept: list[tuple[int, Prompt]] | None = None  # (row, prompt) of a kept scan

    @property
    def pipeline(self) -> Pipeline:
        """The reading pipeline; deciding the format reads the first records."""
        if self._pipeline is None:
            head = itertools.islice(read_records(self.path, self.kind), DETECT_ROWS)
            self._pipeline = Pipeline(self.path, self.kind, self.layout, head)
        return self._pipeline

    @property
    def format(self) -> str:
        """The dataset format: sharegpt, openai-batch, alpaca or rows."""
        return self.pipeline.format

    def scan(
        self,
        visit: Callable[[int, Prompt], None] | None = None,
        check: Callable[[Prompt], None] | None = None,
        *,
        max_errors: int | None = MAX_REPORTED_ERRORS,
        keep: bool = False,
    ) -> ScanReport:
        """Validate every row and infer carried-through column types.

        `visit` sees each valid prompt (resume uses it to compare with stored rows);
        `check` may refuse a prompt with RowError (a run checks rows against its models).
        Ids are kept as 64-bit hashes, 8 bytes a row, so a file of millions of
        prompts is checked for duplicates in little memory. With `keep`, the valid
        prompts of a small file (KEEP_BYTES, KEEP_ROWS) are kept for iteration, which
        then does not read the file again.
        """
        report = ScanReport(path=self.path, max_errors=max_errors)
        pipeline = self.pipeline
        pipeline.dropped.clear()
        hashes, row_numbers = array("Q"), array("Q")
        inferred: dict[str, set[str]] = {}
        self._kept = None
        kept: list[tuple[int, Prompt]] | None = None
        if keep and self.path.stat().st_size <= KEEP_BYTES:
            kept = []
        for row_no, row in self._rows():
            assert row is not None
            report.rows += 1
            try:
                prompt = parse_row(row)
                if check is not None:
                    check(prompt)
            except RowError as exc:
                report.add_error(f"{self._where(row_no)}: {exc}", row_no)
                continue
            hashes.append(id_hash(prompt.id))
            row_numbers.append(row_no)
            report.valid += 1
            report.turn_rows += 1 if prompt.turns is None else len(prompt.turns)
            if visit is not None:
                visit(row_no, prompt)
            if kept is not None:
                kept.append((row_no, prompt))
                if len(kept) > KEEP_ROWS:
                    kept = None
            for name, value in prompt.extra.items():
                inferred.setdefault(name, set()).add(_kind(value))
        report.format, report.dropped = pipeline.format, dict(pipeline.dropped)
        self._report_duplicates(report, hashes, row_numbers)
        report.extra_types = self._extra_types(inferred)
        self.report = report
        if kept is not None:
            skipped = report.skipped_rows  # duplicates are found after the rows were kept
            self._kept = [(n, p) for n, p in kept if n not in skipped] if skipped else kept
        return report

    def _report_duplicates(self, report: ScanReport, hashes: array[int], rows: array[int]) -> None:
        """Every row repeating an earlier row's id is an error naming both rows."""
        keys = np.frombuffer(hashes, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        repeats = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
        if not len(repeats):
            return
        row_of = np.frombuffer(rows, dtype=np.uint64)[order]
        first_of = {}
        for i in repeats.tolist():
            j = i
            while j > 0 and ordered[j - 1] == ordered[i]:
                j -= 1
            first_of[int(row_of[i])] = int(row_of[j])
        wanted = set(first_of) | set(first_of.values())
        ids = {n: parse_row(r).id for n, r in self._rows() if n in wanted and r is not None}
        for later, first in sorted(first_of.items()):
            if ids[later] == ids[first]:  # not merely a 64-bit hash collision
                where = self._where(later)
                report.valid -= 1
                report.add_error(
                    f"{where}: duplicate id {ids[later]!r} (first seen at row {first})", later
                )

    def _where(self, row_no: int) -> str:
        if self.kind == "jsonl":
            return f"{self.path}:{row_no}"
        line = f" (line {row_no + 1})" if self.kind == "csv" else ""
        return f"{self.path}: row {row_no}{line}"

    def __iter__(self) -> Iterator[Prompt]:
        """Yield valid prompts in file order (invalid rows skipped), up to `limit`."""
        for prompt in self._prompts(None):
            if prompt is not None:
                yield prompt

    def _prompts(self, only: bytearray | None) -> Iterator[Prompt | None]:
        """Valid prompts up to `limit`; None for a valid row that `only` (by row) excludes."""
        if self._kept is not None:
            yield from self._kept_prompts(only)
            return
        skipped = self.report.skipped_rows if self.report else set()
        emitted = 0
        for row_no, row in self._rows(only):
            if self.limit is not None and emitted >= self.limit:
                return
            if row_no in skipped:
                continue
            emitted += 1
            if row is None:
                yield None
                continue
            try:
                yield parse_row(row)
            except RowError as exc:
                raise PromptError(f"{self._where(row_no)}: {exc}") from None

    def _kept_prompts(self, only: bytearray | None) -> Iterator[Prompt | None]:
        """`_prompts` from the prompts the scan kept (the file is not read again)."""
        assert self._kept is not None
        kept = self._kept if self.limit is None else self._kept[: self.limit]
        if only is None:
            for _, prompt in kept:
                yield prompt
            return
        for row_no, prompt in kept:
            yield prompt if wanted(only, row_no) else None

    def batches(
        self, size: int = BATCH_ROWS, *, only: bytearray | None = None
    ) -> Iterator[list[Prompt]]:
        """Yield prompts in lists of up to `size`, for reading in a worker thread.

        `only[row]` == 0 skips a row without parsing it (resume: nothing left to send).
        """
        batch: list[Prompt] = []
        for prompt in self._prompts(only):
            if prompt is None:
                continue
            batch.append(prompt)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def count(self) -> int:
        """Number of prompts iteration will yield (needs `scan()` first)."""
        assert self.report is not None, "scan() first"
        return self.report.valid if self.limit is None else min(self.limit, self.report.valid)

    def _rows(self, only: bytearray | None = None) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """(row number, prompt row) of every record; None for a record `only` excludes."""
        pipeline = self.pipeline
        records = read_records(self.path, self.kind, only)
        if pipeline.identity:
            yield from records
            return
        for row_no, record in records:
            yield row_no, None if record is None else pipeline(record)

    def _extra_types(self, inferred: dict[str, set[str]]) -> dict[str, pa.DataType]:
        schema: pa.Schema | None = None
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(self.path)
        types: dict[str, pa.DataType] = {}
        for name, kinds in inferred.items():
            kinds.discard("null")
            if schema is not None and name in schema.names:
                arrow_type = schema.field(name).type
                if _is_primitive(arrow_type):
                    types[name] = arrow_type
                    continue
            types[name] = _arrow_type(kinds)
        return types


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _arrow_type(kinds: set[str]) -> pa.DataType:
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    if kinds and kinds <= {"int", "float"}:
        return pa.float64()
    return pa.string()


def _is_primitive(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_boolean(arrow_type)
        or pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
    )
