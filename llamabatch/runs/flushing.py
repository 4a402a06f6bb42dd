"""Beside a running engine: journalled rows moved into Parquet parts, the journal fsynced,
answers written to the response cache."""

from __future__ import annotations

import time

import anyio

from llamabatch.results import ResultWriter
from llamabatch.results.cache import ResponseCache

FLUSH_POLL_S = 0.25
FIRST_PART_S = 1.0  # the first part this soon; the wait doubles up to engine.part_interval_s
SYNC_INTERVAL_S = 1.0  # what a power loss can cost; a killed process loses nothing


async def flush_periodically(writer: ResultWriter, interval_s: float) -> None:
    """Move journalled rows into Parquet parts and fsync the journal, off the event loop.

    A part is written every `interval_s` while rows arrive (or once the writer is
    `full`: `rows_per_part` rows or `bytes_per_part` bytes wait); the first ones come
    sooner (1 s, 2 s, 4 s, ...),
    so a short run can be read, and survives a SIGKILL, long before a minute.
    """
    last_part = last_sync = time.monotonic()
    wait = min(FIRST_PART_S, interval_s)
    while True:
        await anyio.sleep(FLUSH_POLL_S)
        now = time.monotonic()
        with anyio.CancelScope(shield=True):
            if writer.full or (writer.pending and now - last_part >= wait):
                closed = writer.rotate()
                if closed is not None:
                    await anyio.to_thread.run_sync(writer.write_part, closed)
                last_part = now
                wait = min(2 * wait, interval_s)
            if now - last_sync >= SYNC_INTERVAL_S:
                await anyio.to_thread.run_sync(writer.sync)
                last_sync = now


async def store_cached(cache: ResponseCache) -> None:
    """Write answers queued for the response cache, off the event loop."""
    while True:
        await anyio.sleep(SYNC_INTERVAL_S)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(cache.flush)
