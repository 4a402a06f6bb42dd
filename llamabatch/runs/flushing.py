"""Beside a running engine: journalled rows moved into Parquet parts, the journal fsynced."""

from __future__ import annotations

import time

import anyio

from llamabatch.results import ResultWriter

FLUSH_POLL_S = 0.25
FLUSH_INTERVAL_S = 10.0  # a part at least this often while rows arrive
SYNC_INTERVAL_S = 1.0  # what a power loss can cost; a killed process loses nothing


async def flush_periodically(writer: ResultWriter) -> None:
    """Move journalled rows into Parquet parts and fsync the journal, off the event loop."""
    last_part = last_sync = time.monotonic()
    while True:
        await anyio.sleep(FLUSH_POLL_S)
        now = time.monotonic()
        with anyio.CancelScope(shield=True):
            if writer.pending >= writer.rows_per_part or (
                writer.pending and now - last_part >= FLUSH_INTERVAL_S
            ):
                closed = writer.rotate()
                if closed is not None:
                    await anyio.to_thread.run_sync(writer.write_part, closed)
                last_part = now
            if now - last_sync >= SYNC_INTERVAL_S:
                await anyio.to_thread.run_sync(writer.sync)
                last_sync = now
