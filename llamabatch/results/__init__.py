"""One row per request: the schema, crash-safe storage (journal, Parquet parts), resume."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.results.journal import ResultWriter, Sink
    from llamabatch.results.manifest import read_manifest, write_manifest
    from llamabatch.results.parts import part_files
    from llamabatch.results.resume import DoneIndex, load_done
    from llamabatch.results.rowbuilder import Job, RowBuilder
    from llamabatch.results.schema import COLUMNS, KEY, result_schema

__getattr__ = lazy_exports(
    __name__,
    {
        "COLUMNS": "llamabatch.results.schema",
        "DoneIndex": "llamabatch.results.resume",
        "Job": "llamabatch.results.rowbuilder",
        "KEY": "llamabatch.results.schema",
        "load_done": "llamabatch.results.resume",
        "part_files": "llamabatch.results.parts",
        "read_manifest": "llamabatch.results.manifest",
        "result_schema": "llamabatch.results.schema",
        "ResultWriter": "llamabatch.results.journal",
        "RowBuilder": "llamabatch.results.rowbuilder",
        "Sink": "llamabatch.results.journal",
        "write_manifest": "llamabatch.results.manifest",
    },
)
__all__ = [
    "COLUMNS",
    "KEY",
    "DoneIndex",
    "Job",
    "ResultWriter",
    "RowBuilder",
    "Sink",
    "load_done",
    "part_files",
    "read_manifest",
    "result_schema",
    "write_manifest",
]
