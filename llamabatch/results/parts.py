"""Parquet part files of a results directory: listing, atomic writes, one schema, one row a key."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from llamabatch.errors import UsageError
from llamabatch.results.atomic import replace_atomically
from llamabatch.results.schema import KEY, TURN

PART_GLOB: Final = "part-*.parquet"


def part_files(output: Path) -> list[Path]:
    return sorted(output.glob(PART_GLOB))


def part_path(output: Path, run_id: str, seq: int) -> Path:
    return output / f"part-{run_id}-{seq:06d}.parquet"


def store_part(table: pa.Table, path: Path) -> None:
    """Write (or replace) one part file atomically and durably."""
    replace_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


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
            store_part(pa.Table.from_arrays(columns, schema=merged), path)
    return merged


def _key_table(files: list[Path], columns: Iterable[str]) -> pa.Table | None:
    """The key columns of every part; a missing or null `turn` (not a conversation) reads 0."""
    import pyarrow.compute as pc  # loaded only when a directory is repaired

    tables = []
    for i, path in enumerate(files):
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=[c for c in columns if c in names])
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
    files = part_files(output)
    keys = _key_table(files, [*KEY, "finished_at"])
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
        table = pq.read_table(path)
        mask = pa.array([i not in rows for i in range(table.num_rows)])
        kept = table.filter(mask)
        if kept.num_rows:
            store_part(kept, path)
        else:
            path.unlink()
    return sum(len(rows) for rows in drop.values())
