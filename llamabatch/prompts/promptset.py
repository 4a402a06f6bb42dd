"""Prompt sets: stream rows from JSONL, Parquet or CSV; validate them; infer carried columns."""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa

from llamabatch.errors import PromptError
from llamabatch.prompts.prompt import Prompt, RowError, Undecodable, id_hash, parse_row

FORMATS: Final = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
BATCH_ROWS: Final = 1024
MAX_REPORTED_ERRORS: Final = 20


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

    def add_error(self, message: str, row: int) -> None:
        self.error_count += 1
        self.skipped_rows.add(row)
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(message)

    def raise_if_invalid(self) -> None:
        """Raise one PromptError naming the first problem (and how many more)."""
        if not self.error_count:
            return
        more = self.error_count - 1
        suffix = f" (and {more} more problem{'s' if more != 1 else ''};" if more else " ("
        raise PromptError(
            f"{self.errors[0]}{suffix} run `llamabatch validate {self.path}` to list them, "
            "or set run.skip_invalid = true to skip invalid rows)"
        )


class PromptSet:
    """A prompt file read as a stream; `scan()` validates it whole, iteration yields prompts."""

    def __init__(self, path: str | Path, *, limit: int | None = None) -> None:
        self.path = Path(path)
        fmt = FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise PromptError(
                f"{self.path}: unknown prompt file type {self.path.suffix!r}; "
                "use .jsonl, .parquet or .csv"
            )
        if not self.path.is_file():
            raise PromptError(f"{self.path}: prompt file not found")
        self.format = fmt
        self.limit = limit
        self.report: ScanReport | None = None

    def scan(self, visit: Callable[[int, Prompt], None] | None = None) -> ScanReport:
        """Validate every row (without keeping them) and infer carried-through column types.

        `visit` sees each valid prompt (resume uses it to compare with stored rows).
        Ids are kept as 64-bit hashes, 8 bytes a row, so a file of millions of
        prompts is checked for duplicates in little memory.
        """
        report = ScanReport(path=self.path)
        hashes, row_numbers = array("Q"), array("Q")
        inferred: dict[str, set[str]] = {}
        for row_no, row in self._rows():
            assert row is not None
            report.rows += 1
            try:
                prompt = parse_row(row)
            except RowError as exc:
                report.add_error(f"{self._where(row_no)}: {exc}", row_no)
                continue
            hashes.append(id_hash(prompt.id))
            row_numbers.append(row_no)
            report.valid += 1
            if visit is not None:
                visit(row_no, prompt)
            for name, value in prompt.extra.items():
                inferred.setdefault(name, set()).add(_kind(value))
        self._report_duplicates(report, hashes, row_numbers)
        report.extra_types = self._extra_types(inferred)
        self.report = report
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
        if self.format == "jsonl":
            return f"{self.path}:{row_no}"
        line = f" (line {row_no + 1})" if self.format == "csv" else ""
        return f"{self.path}: row {row_no}{line}"

    def __iter__(self) -> Iterator[Prompt]:
        """Yield valid prompts in file order (invalid rows skipped), up to `limit`."""
        for prompt in self._prompts(None):
            if prompt is not None:
                yield prompt

    def _prompts(self, only: bytearray | None) -> Iterator[Prompt | None]:
        """Valid prompts up to `limit`; None for a valid row that `only` (by row) excludes."""
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
        if self.format == "jsonl":
            yield from self._jsonl_rows(only)
        else:
            for row_no, row in self._arrow_rows():
                yield row_no, None if only is not None and not _wanted(only, row_no) else row

    def _jsonl_rows(self, only: bytearray | None) -> Iterator[tuple[int, dict[str, Any] | None]]:
        with self.path.open("rb") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if only is not None and not _wanted(only, line_no):
                    yield line_no, None
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    row = Undecodable(f"invalid JSON ({exc.args[0]})")
                if not isinstance(row, dict):
                    row = Undecodable(f"expected a JSON object, got {type(row).__name__}")
                yield line_no, row

    def _arrow_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        row_no = 0
        for batch in self._arrow_batches():
            for row in batch.to_pylist():
                row_no += 1
                if self.format == "csv":
                    row = _decode_csv_json(row)
                yield row_no, row

    def _arrow_batches(self) -> Iterator[pa.RecordBatch]:
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                yield from pq.ParquetFile(self.path).iter_batches(batch_size=BATCH_ROWS)
            else:
                import pyarrow.csv as pacsv

                opts = pacsv.ConvertOptions(strings_can_be_null=True)
                yield from pacsv.open_csv(self.path, convert_options=opts)
        except (pa.ArrowInvalid, OSError) as exc:
            raise PromptError(f"{self.path}: cannot read {self.format}: {exc}") from None

    def _extra_types(self, inferred: dict[str, set[str]]) -> dict[str, pa.DataType]:
        schema: pa.Schema | None = None
        if self.format == "parquet":
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


def _wanted(only: bytearray, row_no: int) -> bool:
    return row_no < len(only) and only[row_no] != 0


def _decode_csv_json(row: dict[str, Any]) -> dict[str, Any]:
    """CSV cells are text: decode JSON-looking messages/params cells."""
    for key in ("messages", "turns", "params"):
        value = row.get(key)
        if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                row[key] = orjson.loads(value)
    return row


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
