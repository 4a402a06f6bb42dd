"""Parquet part files of a results directory: listing, atomic writes, one schema, one row a key.

The directory may stage for a URI (results/remote.py): `Parts` lists, reads
and writes the parts wherever they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from llamabatch.errors import UsageError
from llamabatch.results.atomic import replace_atomically
from llamabatch.results.remote import remote_of
from llamabatch.results.schema import KEY, TURN

PART_GLOB: Final = "part-*.parquet"


def part_files(output: Path) -> list[Path]:
    return sorted(output.glob(PART_GLOB))


def part_path(output: Path, run_id: str, seq: int) -> Path:
    return output / f"part-{run_id}-{seq:06d}.parquet"


def store_part(table: pa.Table, path: Path) -> None:
    """Write (or replace) one part file atomically and durably."""
    replace_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


class Parts:
    """The part files of `output`, or of the URI it stages for, as they are now."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.remote = remote_of(output)
        self.fs = None if self.remote is None else self.remote.fs
        if self.remote is None:
            self.paths = [str(p) for p in part_files(output)]
        else:
            self.paths = self.remote.parts()

    def schema(self, path: str) -> pa.Schema:
        return pq.read_schema(path, filesystem=self.fs)

    def read(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(path, columns=columns, filesystem=self.fs)

    def batches(self, path: str, columns: list[str], size: int) -> Iterator[pa.RecordBatch]:
        """The part's rows batch by batch, single-threaded: memory stays small."""
        source = path if self.fs is None else self.fs.open_input_file(path)
        batches: Iterator[pa.RecordBatch] = pq.ParquetFile(source).iter_batches(
            batch_size=size, columns=columns, use_threads=False
        )
        return batches

    def store(self, table: pa.Table, path: str) -> None:
        if self.remote is None:
            store_part(table, Path(path))
        else:
            self.remote.write_table(table, path)

    def delete(self, path: str) -> None:
        if self.remote is None:
            Path(path).unlink()
        else:
            self.remote.delete(path)


def write_part(output: Path, run_id: str, seq: int, table: pa.Table) -> None:
    """Store a new part of writer `run_id` (locally, or at the URI `output` stages for)."""
    remote = remote_of(output)
    if remote is None:
        store_part(table, part_path(output, run_id, seq))
    else:
        remote.write_table(table, remote.path(part_path(output, run_id, seq).name))


def has_part(output: Path, run_id: str, seq: int) -> bool:
    remote = remote_of(output)
    if remote is None:
        return part_path(output, run_id, seq).exists()
    return remote.exists(part_path(output, run_id, seq).name)


def unify_parts(output: Path, schema: pa.Schema) -> pa.Schema:
    """One schema for every part: the union of `schema` and the existing parts' columns.

    pyarrow reads a directory with the first part's schema, so a part written
    before a column existed (a new scorer, a newer llamabatch) is rewritten with
    that column as nulls; columns only old parts have stay, null in new rows.
    """
    parts = Parts(output)
    files = parts.paths
    schemas = [parts.schema(f) for f in files]
    try:
        merged = pa.unify_schemas([schema, *schemas])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UsageError(
            f"{output}: existing results have a column of another type ({exc}); "
            "use another --output or --no-resume --force"
        ) from None
    for path, old in zip(files, schemas, strict=True):
        if not old.equals(merged):
            table = parts.read(path)
            columns = [
                table[f.name].cast(f.type)
                if f.name in table.column_names
                else pa.nulls(table.num_rows, f.type)
                for f in merged
            ]
            parts.store(pa.Table.from_arrays(columns, schema=merged), path)
    return merged


def _key_table(parts: Parts, columns: Iterable[str]) -> pa.Table | None:
    """The key columns of every part; a missing or null `turn` (not a conversation) reads 0."""
    import pyarrow.compute as pc  # loaded only when a directory is repaired

    tables = []
    for i, path in enumerate(parts.paths):
        names = parts.schema(path).names
        table = parts.read(path, columns=[c for c in columns if c in names])
        turn = table[TURN] if TURN in names else pa.nulls(table.num_rows, pa.int32())
        table = table.drop_columns([TURN] if TURN in names else [])
        table = table.append_column(TURN, pc.fill_null(turn, 0))
        tables.append(
            table.append_column("_file", pa.array([i] * table.num_rows, pa.int32())).append_column(
                "_row", pa.array(range(table.num_rows), pa.int64())
            )
        )
    return pa.concat_tables(tables) if tables else None


def dedupe(output: Path) -> int:
    """Keep only the newest row per (model, prompt_id, sample, turn); returns rows dropped."""
    parts = Parts(output)
    files = parts.paths
    keys = _key_table(parts, [*KEY, "finished_at"])
    if keys is None:
        return 0
    counts = keys.group_by(list(KEY)).aggregate([("_row", "count")])
    import pyarrow.compute as pc

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
        table = parts.read(path)
        mask = pa.array([i not in rows for i in range(table.num_rows)])
        kept = table.filter(mask)
        if kept.num_rows:
            parts.store(kept, path)
        else:
            parts.delete(path)
    return sum(len(rows) for rows in drop.values())
