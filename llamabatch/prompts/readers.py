"""Reading a prompt file's records as a stream: JSON lines, JSON arrays, Parquet and CSV.

Each reader yields `(row number, record)`: the line number for JSON lines, the
1-based position otherwise. A record that cannot be decoded comes as an
`Undecodable` carrying its reason; a record `only` excludes comes as None,
unparsed. Only a broken file as a whole (unreadable Parquet, a JSON array cut
short) raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa

from llamabatch.errors import PromptError
from llamabatch.prompts.prompt import Undecodable

# File suffix -> how its records are stored ("json": an array or JSON lines, by its first byte).
KINDS: Final = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
BATCH_ROWS: Final = 1024
BOM: Final = b"\xef\xbb\xbf"

Record = tuple[int, dict[str, Any] | None]


def file_kind(path: Path) -> str:
    """How the file's records are stored: jsonl, json-array, parquet or csv."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise PromptError(
            f"{path}: unknown prompt file type {path.suffix!r}; "
            "use .jsonl (or .ndjson), .json, .parquet or .csv"
        )
    if not path.is_file():
        raise PromptError(f"{path}: prompt file not found")
    if kind == "json":
        # Hugging Face's `to_json` and many exporters write JSON lines into `.json` files.
        kind = "json-array" if _first_byte(path) == b"[" else "jsonl"
    return kind


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        while block := fh.read(4096):
            stripped = block.lstrip().removeprefix(BOM).lstrip()
            if stripped:
                return stripped[:1]
    return b""


def read_records(path: Path, kind: str, only: bytearray | None = None) -> Iterator[Record]:
    """Every record of the file, in order; `only[row] == 0` skips a row without decoding it."""
    if kind == "jsonl":
        yield from _jsonl(path, only)
    elif kind == "json-array":
        yield from _json_array(path, only)
    else:
        for row_no, row in _arrow(path, kind):
            yield row_no, None if only is not None and not wanted(only, row_no) else row


def wanted(only: bytearray, row_no: int) -> bool:
    return row_no < len(only) and only[row_no] != 0


def _jsonl(path: Path, only: bytearray | None) -> Iterator[Record]:
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if line_no == 1:
                line = line.removeprefix(BOM)  # as Windows tools write UTF-8
            if not line.strip():
                continue
            if only is not None and not wanted(only, line_no):
                yield line_no, None
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if line_no == 1 and line.lstrip().startswith(b"{") and path.suffix == ".json":
                    raise PromptError(
                        f"{path}: neither a JSON array nor JSON lines (one object a line)"
                    ) from None
                row = Undecodable(f"invalid JSON ({exc.args[0]})")
            yield line_no, _object(row)


def _json_array(path: Path, only: bytearray | None) -> Iterator[Record]:
    """The items of a top-level JSON array, parsed incrementally (memory stays flat)."""
    import ijson

    row_no = 0
    with path.open("rb") as fh:
        if fh.read(len(BOM)) != BOM:
            fh.seek(0)
        try:
            for item in ijson.items(fh, "item", use_float=True):
                row_no += 1
                if only is not None and not wanted(only, row_no):
                    yield row_no, None
                else:
                    yield row_no, _object(item)
        except ijson.JSONError as exc:
            raise PromptError(
                f"{path}: invalid JSON in row {row_no + 1}: {_first_line(exc)}"
            ) from None


def _first_line(exc: Exception) -> str:
    """yajl's message, without the excerpt it draws on the lines below."""
    message = exc.args[0] if exc.args else exc
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__


def _object(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        return row
    return Undecodable(f"expected a JSON object, got {type(row).__name__}")


def _arrow(path: Path, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    row_no = 0
    for batch in _arrow_batches(path, kind):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def _arrow_batches(path: Path, kind: str) -> Iterator[pa.RecordBatch]:
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        else:
            import pyarrow.csv as pacsv

            convert = pacsv.ConvertOptions(strings_can_be_null=True)
            # Quoted cells may span lines (answers with line breaks, as in most exports).
            parse = pacsv.ParseOptions(newlines_in_values=True)
            yield from pacsv.open_csv(path, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PromptError(f"{path}: cannot read {kind}: {exc}") from None
