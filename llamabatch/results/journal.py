"""Crash-safe writing of result rows: a journal first, Parquet parts off the event loop.

Layout of an output directory:

    part-<run_id>-<seq>.parquet      result rows (what pandas.read_parquet reads)
    _journal/<run_id>-<seq>.jsonl    rows not yet in a part, one JSON line each
    _journal/<run_id>.schema         the Arrow schema those rows belong to
    _manifest.json                   config snapshot, versions, times, counts
    .lock                            one writer at a time (`dirlock.py`)

Each row is appended to the journal with one write() before it is counted, so
a killed process loses nothing; every `rows_per_part` rows (or `bytes_per_part`
bytes of journal), or every `engine.part_interval_s` (see runs/drive.py), the
journal segment is rotated and written out as a part in a worker thread, after
which the segment is deleted: Parquet readers see a run's rows while it goes on,
and after a kill. Opening a directory finishes whatever a crash left half done
and keeps exactly one row per (model, prompt_id, sample): the newest.

A write that fails (a full disk) raises `StorageError` and leaves the journal
as it was before that row: rows written before stay, and the next run moves
them into parts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import threading
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pajson

from llamabatch.results.atomic import storage, storage_error, write_all
from llamabatch.results.dirlock import DirectoryLock
from llamabatch.results.parts import Parts, dedupe, has_part, part_path, unify_parts, write_part
from llamabatch.results.schema import result_schema

JOURNAL_DIR: Final = "_journal"
ROWS_PER_PART: Final = 5000
# ...or fewer, when rows are wide (vectors): turning a segment into a part takes a few
# times its size in memory for a moment.
BYTES_PER_PART: Final = 16 * 2**20
_JSON_ROW: Final = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
# A row is one JSON line; an embedding is journalled as the base64 of its little-endian
# float32 bytes: 4 KB for 768 dims instead of ~9 KB of decimals, and turned back into a
# list<float32> at memory speed, so writing parts keeps up with a fast embedding run.
VECTOR: Final = "embedding"


class Sink(Protocol):
    """Where finished rows go (the writer, or a wrapper that adds derived columns first)."""

    def write(self, row: dict[str, Any]) -> None: ...


class ResultWriter:
    """Journal each row on arrival; write Parquet parts off the event loop."""

    def __init__(
        self,
        output: Path,
        run_id: str,
        *,
        rows_per_part: int = ROWS_PER_PART,
        bytes_per_part: int = BYTES_PER_PART,
        lock: DirectoryLock | None = None,
    ) -> None:
        """`lock`: the directory's lock, held by the caller beyond the writer's life."""
        self.output = output
        self.schema = result_schema()
        self.run_id = run_id
        self.rows_per_part = rows_per_part
        self.bytes_per_part = bytes_per_part
        self._pending_bytes = 0
        self._journal = output / JOURNAL_DIR
        self._seq = 0
        self._pending = 0
        self._had_parts = False
        self.written = 0
        self._fd: int | None = None
        self._fd_lock = threading.Lock()
        self._size = 0  # bytes in the current segment: where a failed write is cut back to
        self._lock = lock or DirectoryLock(output, "run")
        self._owns_lock = lock is None

    def open(self) -> None:
        """Take the directory's lock, repair what a previous run left, start a journal."""
        with storage(self._journal):
            self._journal.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        with storage(self.output):
            recover(self.output)
        # Only a directory that already held rows can end up with two rows for one key.
        self._had_parts = bool(Parts(self.output).paths)

    def start(self, schema: pa.Schema) -> None:
        """Begin journalling rows of `schema`, widened to match the parts already here."""
        with storage(self.output):
            schema = unify_parts(self.output, schema)
        self.attach(schema)

    @property
    def lock_fd(self) -> int | None:
        """The descriptor that holds the directory's lock, once `open`ed.

        A worker process given a copy shares the lock: it is held until the last
        holder exits, so a run cannot start over the journals of a killed parent's
        workers while they are still writing.
        """
        return self._lock.fd

    def attach(self, schema: pa.Schema) -> None:
        """Begin journalling rows of `schema` as it is (a worker process's writer: the run's
        parent holds the lock, repaired the directory and unified the schema)."""
        self.schema = schema
        path = self._journal / f"{self.run_id}.schema"
        with storage(path):
            self._journal.mkdir(parents=True, exist_ok=True)  # another node's staging directory
            path.write_bytes(schema.serialize().to_pybytes())
        self._open_segment()

    def write(self, row: dict[str, Any]) -> None:
        """Make `row` durable against a process kill (one write to the journal).

        Every byte is written or the row is not: a short or failed write is cut
        back off the segment, so no torn line sits before later rows.
        """
        line = orjson.dumps(_packed(row), option=_JSON_ROW)
        with self._fd_lock:
            assert self._fd is not None, "open() first"
            try:
                write_all(self._fd, line)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                segment = _segment_path(self.output, self.run_id, self._seq)
                raise storage_error(segment, exc) from None
            self._size += len(line)
        self._pending += 1
        self._pending_bytes += len(line)
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
                with storage(self._journal):
                    os.fsync(fd)
            finally:
                os.close(fd)

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def full(self) -> bool:
        """Whether the current segment holds a part's worth of rows (or of bytes)."""
        return self._pending >= self.rows_per_part or self._pending_bytes >= self.bytes_per_part

    def rotate(self) -> int | None:
        """Close the current segment and start the next; return the closed one's number."""
        if not self._pending:
            return None
        seq = self._seq
        self._close_segment()
        self._seq += 1
        self._pending = self._pending_bytes = 0
        self._open_segment()
        return seq

    def write_part(self, seq: int) -> None:
        """Turn a closed journal segment into a Parquet part, then drop it (blocking)."""
        with storage(part_path(self.output, self.run_id, seq)):
            _compact(self.output, self.run_id, seq, self.schema)

    def close(self, *, dedupe_keys: bool = True) -> None:
        """Write every remaining row and leave exactly one row per key (blocking).

        A key can only have two rows when this run wrote it and the directory
        held an older (errored) row for it; `dedupe_keys=False` says none did.
        """
        try:
            # A full disk fails here too: the journal then stays for the next run to recover.
            closed = self.rotate()
            if closed is not None:
                self.write_part(closed)
            self._close_segment()
            _segment_path(self.output, self.run_id, self._seq).unlink(missing_ok=True)
            (self._journal / f"{self.run_id}.schema").unlink(missing_ok=True)
            if self._had_parts and self.written and dedupe_keys:
                with storage(self.output):
                    dedupe(self.output)
        finally:
            self._close_segment()
            if self._owns_lock:
                self._lock.release()
        with contextlib.suppress(OSError):
            self._journal.rmdir()  # only when empty: a finished run leaves no journal

    def _open_segment(self) -> None:
        path = _segment_path(self.output, self.run_id, self._seq)
        with self._fd_lock, storage(path):
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = os.fstat(self._fd).st_size

    def _close_segment(self) -> None:
        with self._fd_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _segment_path(output: Path, run_id: str, seq: int) -> Path:
    return output / JOURNAL_DIR / f"{run_id}-{seq:06d}.jsonl"


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
        write_part(output, run_id, seq, _parse_journal(data, schema))
        # Arrow's allocator keeps what a part took, per thread; over a long run of wide
        # rows (vectors) that alone grew the process by hundreds of MB.
        pa.default_memory_pool().release_unused()
    segment.unlink(missing_ok=True)
    return data.count(b"\n")


def _packed(row: dict[str, Any]) -> dict[str, Any]:
    vector = row.get(VECTOR)
    if vector is None:
        return row
    raw = np.asarray(vector, dtype="<f4").tobytes()
    return {**row, VECTOR: base64.b64encode(raw).decode("ascii")}


def _parse_journal(data: bytes, schema: pa.Schema) -> pa.Table:
    # Timestamps are journalled as integer microseconds: read as int64, then cast;
    # vectors as base64 text (segments of older versions: as JSON numbers).
    def as_read(f: pa.Field, packed: bool) -> pa.Field:
        if pa.types.is_timestamp(f.type):
            return pa.field(f.name, pa.int64())
        return pa.field(f.name, pa.string()) if packed and f.name == VECTOR else f

    for packed in (True, False):
        try:
            table = pajson.read_json(
                io.BytesIO(data),
                # One block, so threads parse nothing in parallel: they only add CPU (~25 %).
                read_options=pajson.ReadOptions(block_size=len(data) + 1, use_threads=False),
                parse_options=pajson.ParseOptions(
                    explicit_schema=pa.schema([as_read(f, packed) for f in schema]),
                    unexpected_field_behavior="ignore",
                ),
            )
            break
        except pa.ArrowInvalid:
            if not packed or VECTOR not in schema.names:
                raise
    columns = [
        _unpacked(table[f.name], f.type)
        if packed and f.name == VECTOR
        else _typed(table[f.name], f)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _typed(column: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    """A column as read, in its field's type.

    Without a cast where none is needed: a cast loads pyarrow.compute, and (for
    numpy input) pandas, a second or so of a short run's start-up.
    """
    if column.type == field.type:
        return column
    if pa.types.is_timestamp(field.type) and column.type == pa.int64():
        # Integer microseconds; a cast from int64 would reinterpret them the same way.
        return pa.chunked_array([c.view(field.type) for c in column.chunks], type=field.type)
    return column.cast(field.type)


def _unpacked(column: pa.ChunkedArray, kind: pa.DataType) -> pa.Array:
    """Base64 float32 vectors (or nulls) -> list<float32>, decoded into one buffer."""
    if column.null_count == len(column):  # a chat run's rows: no vectors
        return pa.nulls(len(column), kind)
    texts = column.combine_chunks()
    n = len(texts)
    ends = np.frombuffer(texts.buffers()[1], np.int32)[texts.offset : texts.offset + n + 1]
    chars = np.frombuffer(texts.buffers()[2] or b"=", np.uint8)
    sizes = np.diff(ends) // 4 * 3  # decoded bytes, less the padding below
    for pad in (1, 2):
        at = ends[1:] - pad
        sizes -= (np.diff(ends) >= pad) & (chars[at.clip(0)] == ord("="))
    values = np.empty(int(sizes.sum()) // 4, "<f4")
    out = values.data.cast("B")
    text = memoryview(texts.buffers()[2] or b"")
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(sizes // 4, out=offsets[1:])
    for i in np.flatnonzero(sizes):
        out[offsets[i] * 4 : offsets[i + 1] * 4] = binascii.a2b_base64(text[ends[i] : ends[i + 1]])
    return pa.ListArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(offsets)]),
        pa.Array.from_buffers(pa.float32(), len(values), [None, pa.py_buffer(values)]),
        mask=texts.is_null(),
    )


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
        if has_part(output, run_id, int(seq_text)):
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


def recover_writer(output: Path, writer_id: str) -> int:
    """Turn the journal segments of one writer whose process died into parts; returns rows."""
    journal = output / JOURNAL_DIR
    try:
        schema_bytes = (journal / f"{writer_id}.schema").read_bytes()
    except FileNotFoundError:
        return 0  # it died before journalling anything
    schema = pa.ipc.read_schema(pa.py_buffer(schema_bytes))
    recovered = 0
    for segment in sorted(journal.glob(f"{writer_id}-*.jsonl")):
        seq = int(segment.stem.rpartition("-")[2])
        if has_part(output, writer_id, seq):
            segment.unlink()
            continue
        recovered += _compact(output, writer_id, seq, schema)
    (journal / f"{writer_id}.schema").unlink(missing_ok=True)
    return recovered


def journal_table(output: Path) -> pa.Table | None:
    """The rows a run still in progress has journalled but not yet put in a part (read-only).

    Segments may be compacted while they are read: one already gone is skipped
    (its rows are in a part by then), and a torn last line is left out.
    """
    journal = output / JOURNAL_DIR
    tables = []
    for segment in sorted(journal.glob("*.jsonl")):
        run_id, _, seq = segment.stem.rpartition("-")
        if part_path(output, run_id, int(seq)).exists():
            continue
        try:
            data = segment.read_bytes()
            schema_bytes = (journal / f"{run_id}.schema").read_bytes()
        except FileNotFoundError:
            continue
        data = data[: data.rfind(b"\n") + 1]
        if data:
            tables.append(_parse_journal(data, pa.ipc.read_schema(pa.py_buffer(schema_bytes))))
    return pa.concat_tables(tables, promote_options="default") if tables else None
