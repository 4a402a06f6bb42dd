"""Result rows: the schema, a crash-safe writer, resume state and the manifest.

Layout of an output directory:

    part-<run_id>-<seq>.parquet      result rows (what pandas.read_parquet reads)
    _journal/<run_id>-<seq>.jsonl    rows not yet in a part, one JSON line each
    _journal/<run_id>.schema         the Arrow schema those rows belong to
    _manifest.json                   config snapshot, versions, times, counts

Each row is appended to the journal with one write() before it is counted, so
a killed process loses nothing; every `rows_per_part` rows the journal segment
is rotated and written out as a part in a worker thread, after which the
segment is deleted. Opening a directory finishes whatever a crash left half
done and keeps exactly one row per (model, prompt_id, sample): the newest.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import platform
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from llamabatch.errors import UsageError

KEY: Final = ("model", "prompt_id", "sample")
JOURNAL_DIR: Final = "_journal"
MANIFEST: Final = "_manifest.json"
PART_GLOB: Final = "part-*.parquet"
ROWS_PER_PART: Final = 5000

_TS = pa.timestamp("us", tz="UTC")
FIXED_FIELDS: Final = (
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("provider", pa.string(), nullable=False),
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("prompt_hash", pa.string()),
    pa.field("sample", pa.int32(), nullable=False),
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
    pa.field("usage_source", pa.string(), nullable=False),
    pa.field("queue_s", pa.float64(), nullable=False),
    pa.field("ttft_s", pa.float64()),
    pa.field("latency_s", pa.float64(), nullable=False),
    pa.field("decode_tps", pa.float64()),
    pa.field("itl_mean_s", pa.float64()),
    pa.field("server_prompt_s", pa.float64()),
    pa.field("server_decode_s", pa.float64()),
    pa.field("server_load_s", pa.float64()),
    pa.field("started_at", _TS, nullable=False),
    pa.field("finished_at", _TS, nullable=False),
    pa.field("scheduled_at", _TS),
    pa.field("request_params", pa.string(), nullable=False),
    pa.field("expected", pa.string()),
)
COLUMNS: Final = tuple(f.name for f in FIXED_FIELDS)

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


def part_files(output: Path) -> list[Path]:
    return sorted(output.glob(PART_GLOB))


class ResultWriter:
    """Journal each row on arrival; write Parquet parts off the event loop."""

    def __init__(self, output: Path, run_id: str, *, rows_per_part: int = ROWS_PER_PART) -> None:
        self.output = output
        self.schema = result_schema()
        self.run_id = run_id
        self.rows_per_part = rows_per_part
        self._journal = output / JOURNAL_DIR
        self._seq = 0
        self._pending = 0
        self._had_parts = False
        self.written = 0
        self._fd: int | None = None
        self._fd_lock = threading.Lock()
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Take the directory's lock, repair what a previous run left, start a journal."""
        self._journal.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self._journal / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise UsageError(
                f"{self.output} is in use by another llamabatch run; wait for it or pick "
                "another --output"
            ) from None
        recover(self.output)
        # Only a directory that already held rows can end up with two rows for one key.
        self._had_parts = bool(part_files(self.output))

    def start(self, schema: pa.Schema) -> None:
        """Begin journalling rows of `schema`, widened to match the parts already here."""
        schema = unify_parts(self.output, schema)
        self.schema = schema
        (self._journal / f"{self.run_id}.schema").write_bytes(schema.serialize().to_pybytes())
        self._open_segment()

    def write(self, row: dict[str, Any]) -> None:
        """Make `row` durable against a process kill (one write to the journal)."""
        with self._fd_lock:
            assert self._fd is not None, "open() first"
            os.write(self._fd, orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        self._pending += 1
        self.written += 1

    def sync(self) -> None:
        """fsync the journal (bounds what a machine crash can lose; blocking).

        The fsync runs on a duplicate descriptor outside the lock: held during a
        slow disk flush, the lock would stall every row written meanwhile.
        """
        with self._fd_lock:
            fd = None if self._fd is None else os.dup(self._fd)
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @property
    def pending(self) -> int:
        return self._pending

    def rotate(self) -> int | None:
        """Close the current segment and start the next; return the closed one's number."""
        if not self._pending:
            return None
        seq = self._seq
        self._close_segment()
        self._seq += 1
        self._pending = 0
        self._open_segment()
        return seq

    def write_part(self, seq: int) -> None:
        """Turn a closed journal segment into a Parquet part, then drop it (blocking)."""
        _compact(self.output, self.run_id, seq, self.schema)

    def close(self, *, dedupe_keys: bool = True) -> None:
        """Write every remaining row and leave exactly one row per key (blocking).

        A key can only have two rows when this run wrote it and the directory
        held an older (errored) row for it; `dedupe_keys=False` says none did.
        """
        closed = self.rotate()
        if closed is not None:
            self.write_part(closed)
        self._close_segment()
        _segment_path(self.output, self.run_id, self._seq).unlink(missing_ok=True)
        (self._journal / f"{self.run_id}.schema").unlink(missing_ok=True)
        if self._had_parts and self.written and dedupe_keys:
            dedupe(self.output)
        if self._lock_fd is not None:
            (self._journal / ".lock").unlink(missing_ok=True)
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        with contextlib.suppress(OSError):
            self._journal.rmdir()  # only when empty: a finished run leaves no journal

    def _open_segment(self) -> None:
        path = _segment_path(self.output, self.run_id, self._seq)
        with self._fd_lock:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _close_segment(self) -> None:
        with self._fd_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _segment_path(output: Path, run_id: str, seq: int) -> Path:
    return output / JOURNAL_DIR / f"{run_id}-{seq:06d}.jsonl"


def _part_path(output: Path, run_id: str, seq: int) -> Path:
    return output / f"part-{run_id}-{seq:06d}.parquet"


def _compact(output: Path, run_id: str, seq: int, schema: pa.Schema) -> int:
    """Journal segment -> Parquet part -> segment deleted; returns the rows moved.

    The part is parsed from the journal's own bytes by Arrow's JSON reader, so
    a part always holds exactly what was journalled, and no row is converted
    in Python. A torn last line (a killed process's unfinished write) is
    dropped: that row was never counted.
    """
    segment = _segment_path(output, run_id, seq)
    data = segment.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    if data:
        table = _parse_journal(data, schema)
        _atomic_write_table(table, _part_path(output, run_id, seq))
    segment.unlink(missing_ok=True)
    return data.count(b"\n")


def _parse_journal(data: bytes, schema: pa.Schema) -> pa.Table:
    # Timestamps are journalled as integer microseconds: read as int64, then cast.
    as_read = pa.schema(
        [pa.field(f.name, pa.int64()) if pa.types.is_timestamp(f.type) else f for f in schema]
    )
    table = pajson.read_json(
        io.BytesIO(data),
        read_options=pajson.ReadOptions(block_size=len(data) + 1),
        parse_options=pajson.ParseOptions(
            explicit_schema=as_read, unexpected_field_behavior="ignore"
        ),
    )
    columns = [table[f.name].cast(f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rewrite_part(path: Path, table: pa.Table) -> None:
    """Replace one part file atomically (used when scores are recomputed)."""
    _atomic_write_table(table, path)


def recover(output: Path) -> int:
    """Turn journal segments a killed run left behind into parts; returns rows recovered."""
    journal = output / JOURNAL_DIR
    if not journal.is_dir():
        return 0
    for tmp in output.glob(".part-*.tmp"):
        tmp.unlink()
    recovered = 0
    for segment in sorted(journal.glob("*.jsonl")):
        run_id, _, seq_text = segment.stem.rpartition("-")
        if _part_path(output, run_id, int(seq_text)).exists():
            segment.unlink()  # compacted, but killed before the segment was deleted
            continue
        schema_file = journal / f"{run_id}.schema"
        schema = pa.ipc.read_schema(pa.py_buffer(schema_file.read_bytes()))
        recovered += _compact(output, run_id, int(seq_text), schema)
    for schema_file in journal.glob("*.schema"):
        schema_file.unlink()
    if recovered:
        dedupe(output)
    return recovered


def unify_parts(output: Path, schema: pa.Schema) -> pa.Schema:
    """One schema for every part: the union of `schema` and the existing parts' columns.

    pyarrow reads a directory with the first part's schema, so a part written
    before a column existed (a new scorer, a newer llamabatch) is rewritten with
    that column as nulls; columns only old parts have stay, null in new rows.
    """
    files = part_files(output)
    schemas = [pq.read_schema(f) for f in files]
    try:
        merged = pa.unify_schemas([schema, *schemas])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UsageError(
            f"{output}: existing results have a column of another type ({exc}); "
            "use another --output or --no-resume --force"
        ) from None
    for path, old in zip(files, schemas, strict=True):
        if not old.equals(merged):
            table = pq.read_table(path)
            columns = [
                table[f.name].cast(f.type)
                if f.name in table.column_names
                else pa.nulls(table.num_rows, f.type)
                for f in merged
            ]
            _atomic_write_table(pa.Table.from_arrays(columns, schema=merged), path)
    return merged


def _key_table(files: list[Path], columns: Iterable[str]) -> pa.Table | None:
    tables = []
    for i, path in enumerate(files):
        table = pq.read_table(path, columns=list(columns))
        tables.append(
            table.append_column("_file", pa.array([i] * table.num_rows, pa.int32())).append_column(
                "_row", pa.array(range(table.num_rows), pa.int64())
            )
        )
    return pa.concat_tables(tables) if tables else None


def dedupe(output: Path) -> int:
    """Keep only the newest row per (model, prompt_id, sample); returns rows dropped."""
    files = part_files(output)
    keys = _key_table(files, [*KEY, "finished_at"])
    if keys is None:
        return 0
    counts = keys.group_by(list(KEY)).aggregate([("_row", "count")])
    import pyarrow.compute as pc  # loaded only when a directory is repaired

    dup_keys = counts.filter(pc.greater(counts["_row_count"], 1))
    if dup_keys.num_rows == 0:
        return 0
    dups = keys.join(dup_keys.select(list(KEY)), keys=list(KEY), join_type="inner").to_pylist()
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in dups:
        key = tuple(row[k] for k in KEY)
        best = newest.get(key)
        if best is None or (row["finished_at"], row["_file"]) > (
            best["finished_at"],
            best["_file"],
        ):
            newest[key] = row
    drop: dict[int, set[int]] = {}
    for row in dups:
        if newest[tuple(row[k] for k in KEY)] is not row:
            drop.setdefault(row["_file"], set()).add(row["_row"])
    for file_index, rows in drop.items():
        path = files[file_index]
        table = pq.read_table(path)
        mask = pa.array([i not in rows for i in range(table.num_rows)])
        kept = table.filter(mask)
        if kept.num_rows:
            _atomic_write_table(kept, path)
        else:
            path.unlink()
    return sum(len(rows) for rows in drop.values())


def read_manifest(output: Path) -> dict[str, Any] | None:
    path = output / MANIFEST
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_manifest(output: Path, manifest: Mapping[str, Any]) -> None:
    """Replace the manifest atomically."""
    path = output / MANIFEST
    tmp = output / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    import aiohttp
    import anyio

    from llamabatch import __version__

    return {
        "llamabatch": __version__,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "anyio": getattr(anyio, "__version__", "unknown"),
        "pyarrow": pa.__version__,
    }
