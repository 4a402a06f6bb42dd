"""The durable record of a run's Batch API work, so a crash never pays for a request twice.

In `_batches/` of an output directory:

    log.jsonl              one event per line, each appended with one write() and
                           fsynced before the step it records is followed by the next
    <chunk>.jsonl          a request file, exactly as uploaded; its custom_ids are
                           the keys the chunk covers
    <chunk>.output.jsonl   downloaded result files, until their rows are stored
    <chunk>.errors.jsonl

A chunk goes prepared -> uploaded (file id) -> creating -> created (batch id)
-> collected. Each event is durable before the next request is sent, so after
a kill at any moment the next run knows, per chunk, what it may redo for free
(write and upload a file) and what it must not (create a batch): a chunk left
`creating` without a batch id is looked up among the provider's batches by its
file id before it is ever created again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from llamabatch.results.atomic import write_all

BATCH_DIR: Final = "_batches"
LOG: Final = "log.jsonl"


@dataclass
class Chunk:
    """One request file and the batch made from it."""

    name: str
    model: str
    requests: int
    file_id: str | None = None
    creating: bool = False
    batch_id: str | None = None
    status: str | None = None  # as last seen by a poll
    counts: dict[str, int] = field(default_factory=dict)
    collected: bool = False

    @property
    def in_flight(self) -> bool:
        """Its requests may be (or are about to be) answered by a batch not yet collected."""
        return not self.collected


class BatchLog:
    """Replays and appends `_batches/log.jsonl` (use from a worker thread: it fsyncs)."""

    def __init__(self, output: Path) -> None:
        self.dir = output / BATCH_DIR
        self.chunks: dict[str, Chunk] = {}
        path = self.dir / LOG
        if path.exists():
            data = path.read_bytes()
            for line in data[
                : data.rfind(b"\n") + 1
            ].splitlines():  # a torn last line never happened
                self._apply(orjson.loads(line))

    def path(self, chunk: str, kind: str = "") -> Path:
        return self.dir / f"{chunk}{'.' + kind if kind else ''}.jsonl"

    def pending(self) -> list[Chunk]:
        return [c for c in self.chunks.values() if c.in_flight]

    def record(self, event: str, chunk: str, **data: Any) -> None:
        """Append one event durably, then apply it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = {"event": event, "chunk": chunk, "at": round(time.time(), 3), **data}
        fd = os.open(self.dir / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            write_all(fd, orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
            os.fsync(fd)
        finally:
            os.close(fd)
        self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        event, name = entry["event"], entry["chunk"]
        if event == "prepared":
            self.chunks[name] = Chunk(name, entry["model"], entry["requests"])
            return
        chunk = self.chunks[name]
        if event == "uploaded":
            chunk.file_id = entry["file_id"]
        elif event == "creating":
            chunk.creating = True
        elif event == "created":
            chunk.batch_id = entry["batch_id"]
        elif event == "status":
            chunk.status = entry["status"]
            chunk.counts = entry.get("counts") or {}
        elif event == "collected":
            chunk.collected = True

    def custom_ids(self, chunk: Chunk) -> Iterator[str]:
        """The custom_ids a chunk's request file covers, in file order (blocking)."""
        with self.path(chunk.name).open("rb") as fh:
            for line in fh:
                yield orjson.loads(line)["custom_id"]


def write_request_file(path: Path, lines: list[bytes]) -> int:
    """Write a chunk's request file durably (tmp, fsync, rename); returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.writelines(lines)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.rename(path)
    return sum(map(len, lines))
