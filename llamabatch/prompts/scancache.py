"""A validated prompt set remembered in the output directory, so a resume need not re-validate.

    _scan/meta.json      the prompt file's digest and what its validation found
    _scan/schema.arrow   the types of its carried-through columns
    _scan/ids.jsonl      `[row, id]` for every valid row, in file order

Validating a million prompts in Python takes seconds; hashing the file takes
a fraction of that. The digest covers the file's bytes and how they are read
(`[run] format`, `columns`, `first_turn_only`): a changed mapping makes other
rows of the same bytes. When the digest matches the cache, a
resume reuses the report and marks the rows with work left from the stored
ids, without parsing a single prompt. The ids are written as the validation
pass reads them and read back in chunks, so memory stays flat.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

import orjson
import pyarrow as pa

from llamabatch._version import __version__
from llamabatch.prompts.prompt import Prompt
from llamabatch.prompts.promptset import ScanReport

CACHE_DIR: Final = "_scan"
FORMAT: Final = 2


def file_digest(path: Path, layout: bytes = b"") -> str:
    """BLAKE2b of the file's bytes and of how they are read (what keeps a validation true)."""
    digest = hashlib.blake2b(hashlib.blake2b(layout, digest_size=16).digest(), digest_size=16)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class CacheWriter:
    """A scan visitor writing each valid row's id to a temporary file; `commit` keeps it."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="llamabatch-ids-", suffix=".jsonl")
        self._path = Path(name)
        self._fh: IO[bytes] = os.fdopen(fd, "wb")

    def __call__(self, row_no: int, prompt: Prompt) -> None:
        self._fh.write(orjson.dumps([row_no, prompt.id], option=orjson.OPT_APPEND_NEWLINE))

    def commit(self, output: Path, digest: str, report: ScanReport) -> None:
        """Store the scan under `output` (which the caller holds the lock of)."""
        self._fh.close()
        cache = output / CACHE_DIR
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        shutil.move(self._path, cache / "ids.jsonl")
        fields = [pa.field(name, arrow_type) for name, arrow_type in report.extra_types.items()]
        (cache / "schema.arrow").write_bytes(pa.schema(fields).serialize().to_pybytes())
        meta = {
            "format": FORMAT,
            "llamabatch": __version__,
            "digest": digest,
            "rows": report.rows,
            "valid": report.valid,
            "turn_rows": report.turn_rows,
            "errors": report.errors,
            "error_count": report.error_count,
            "skipped_rows": sorted(report.skipped_rows),
            "input_format": report.format,
            "dropped": report.dropped,
        }
        (cache / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    def discard(self) -> None:
        """Drop the ids (bad input, or the run never opened its output); safe after commit."""
        self._fh.close()
        self._path.unlink(missing_ok=True)


def load(output: Path, prompts_path: Path, digest: str) -> ScanReport | None:
    """The cached report when it describes exactly this file's bytes, else None."""
    cache = output / CACHE_DIR
    try:
        meta: dict[str, Any] = json.loads((cache / "meta.json").read_text(encoding="utf-8"))
        schema = pa.ipc.read_schema(pa.py_buffer((cache / "schema.arrow").read_bytes()))
    except (OSError, ValueError, pa.ArrowInvalid):
        return None
    if meta.get("format") != FORMAT or meta.get("llamabatch") != __version__:
        return None
    if meta.get("digest") != digest or not (cache / "ids.jsonl").is_file():
        return None
    return ScanReport(
        path=prompts_path,
        rows=meta["rows"],
        valid=meta["valid"],
        turn_rows=meta.get("turn_rows", meta["valid"]),
        errors=meta["errors"],
        error_count=meta["error_count"],
        skipped_rows=set(meta["skipped_rows"]),
        extra_types={f.name: f.type for f in schema},
        format=meta["input_format"],
        dropped=meta["dropped"],
    )


def stored_ids(output: Path) -> Iterator[tuple[int, str]]:
    """(row, id) of every valid row, from the cache, in file order."""
    with (output / CACHE_DIR / "ids.jsonl").open("rb") as fh:
        for line in fh:
            row_no, prompt_id = orjson.loads(line)
            yield row_no, prompt_id
