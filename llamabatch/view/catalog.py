"""The runs a viewer may show: found under the directories it was given, addressed by key.

A URL names a run only by its key; a key not in the catalog is not found. So no
path from a request ever reaches the file system, and nothing outside the given
directories can be served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from llamabatch.errors import UsageError
from llamabatch.results import part_files, read_manifest
from llamabatch.results.journal import JOURNAL_DIR, journal_table
from llamabatch.results.manifest import MANIFEST
from llamabatch.results.parts import Parts
from llamabatch.results.remote import remote_of, shown_name


def is_run_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    if remote_of(path) is not None:  # it stages for a URI (s3://...), where the run is
        return True
    return (path / MANIFEST).is_file() or bool(part_files(path)) or (path / JOURNAL_DIR).is_dir()


@dataclass(frozen=True)
class Run:
    key: str
    path: Path

    @property
    def manifest(self) -> dict[str, Any]:
        try:
            return read_manifest(self.path) or {}
        except ValueError:  # half-written or hand-edited: show the run without it
            return {}

    @property
    def live(self) -> bool:
        """A run still writing: its manifest says so and its journal is there."""
        return self.manifest.get("status") == "running" and (self.path / JOURNAL_DIR).is_dir()

    def signature(self) -> tuple[Any, ...]:
        """Changes whenever the stored rows change (parts written, journal grown)."""
        remote = remote_of(self.path)
        stamps: list[tuple[str, int, int]] = [] if remote is None else remote.part_stamps()
        local = [] if remote is not None else part_files(self.path)
        for path in [*local, *sorted((self.path / JOURNAL_DIR).glob("*.jsonl"))]:
            try:
                stat = path.stat()
            except FileNotFoundError:  # compacted between listing and stat
                continue
            stamps.append((path.name, stat.st_size, stat.st_mtime_ns))
        return tuple(stamps)

    def dataset(self) -> ds.Dataset:
        """The stored rows: every part and, for a live run, the rows still in its journal."""
        stored = Parts(self.path)  # here, or at the URI it stages for
        parts = stored.paths
        schemas = [stored.schema(p) for p in parts]
        journal = journal_table(self.path)
        if journal is not None:
            schemas.append(journal.schema)
        if not schemas:
            raise LookupError(f"{self.key} holds no rows yet")
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        children = []
        if parts:
            children.append(
                ds.dataset(parts, schema=schema, format="parquet", filesystem=stored.fs)
            )
        if journal is not None:
            children.append(ds.dataset(_conform(journal, schema)))
        return children[0] if len(children) == 1 else ds.dataset(children)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class Catalog:
    """Run directories under the given paths (each a run, or a folder of runs)."""

    def __init__(self, roots: list[Path]) -> None:
        for root in roots:
            if not root.is_dir():
                raise UsageError(f"{root}: not a directory (give results directories)")
        self.roots = [root.resolve() for root in roots]

    def runs(self) -> list[Run]:
        """Every run, found afresh (new runs appear), keys unique and stable across calls."""
        found: list[Run] = []
        taken: set[str] = set()
        for root in self.roots:
            candidates = [root] if is_run_dir(root) else sorted(root.iterdir())
            for path in candidates:
                if path.name.startswith((".", "_")) or not is_run_dir(path):
                    continue
                if not path.resolve().is_relative_to(root):
                    continue  # a link leading out of the given directories
                name = shown_name(path)  # a URI's last part, for a directory staging for it
                key, n = name, 2
                while key in taken:
                    key, n = f"{name}~{n}", n + 1
                taken.add(key)
                found.append(Run(key, path))
        return found

    def get(self, key: str) -> Run:
        for run in self.runs():
            if run.key == key:
                return run
        raise KeyError(key)
