"""One worker process of a run with `[engine] workers` > 1.

It runs the normal engine on its share of the prompts (by a stable hash of
the prompt id, so a conversation's turns stay together), with the run's
limits leased from the parent's coordinator, and journals its rows into the
run's directory under its own writer id: its own journal segments and part
files, so nothing is shared but the directory (whose lock the parent holds).
Progress goes to the parent in small batches. SIGINT and SIGTERM are the
parent's to handle: it sends `stop` (admit nothing new) and then `cancel`; a parent that
disappears is taken as `cancel`.
"""

from __future__ import annotations

import functools
import logging
import pickle
import signal
import socket
import sys
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio
import pyarrow as pa

from llamabatch.config import RunConfig
from llamabatch.engine import Engine, Lane
from llamabatch.engine.coordinator import SharedLimits
from llamabatch.errors import RequestError
from llamabatch.prompts import Layout, Prompt, PromptSet, ScanReport
from llamabatch.redact import Redactor, redacted_logs
from llamabatch.results import ResultWriter, RowBuilder, load_done
from llamabatch.runs.channel import Channel
from llamabatch.runs.flushing import flush_periodically
from llamabatch.runs.servers import prompt_renderer
from llamabatch.scoring import Scoring
from llamabatch.wire import Transport

PROGRESS_INTERVAL_S = 0.1


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to take its share of a run."""

    index: int
    count: int
    writer_id: str  # names its journal segments and part files
    run_id: str
    config: RunConfig  # with the URLs of the servers the parent started
    schema: bytes  # the run's unified Arrow schema, serialized
    scan: ScanReport
    only: Mapping[str, bytearray | None]  # per model, the rows with work left (resume)
    keep_errors: bool
    log_level: int


def share(total: int, index: int, count: int) -> int:
    """Worker `index`'s part of a limit of `total` split `count` ways (at least 1)."""
    return max(1, total // count + (index < total % count))


def model_concurrency(config: RunConfig) -> list[int]:
    """Each model's whole-run concurrency, as `Lane.build` sets it."""
    cap = config.engine.concurrency
    return [min(m.concurrency or cap, cap) for m in config.models]


def share_config(config: RunConfig, index: int, count: int) -> RunConfig:
    """The config one worker runs: its share of every concurrency and of the arrival rate."""
    engine = config.engine
    rate = engine.request_rate / count if engine.request_rate else None
    models = tuple(
        replace(m, concurrency=share(m.concurrency, index, count)) if m.concurrency else m
        for m in config.models
    )
    engine = replace(
        engine, concurrency=share(engine.concurrency, index, count), request_rate=rate, workers=1
    )
    return replace(config, engine=engine, models=models)


def in_share(prompt_id: str, index: int, count: int) -> bool:
    return zlib.crc32(prompt_id.encode()) % count == index


class _Share:
    """The prompts of one worker's share."""

    def __init__(self, prompts: PromptSet, index: int, count: int) -> None:
        self.prompts, self.index, self.count = prompts, index, count

    def batches(self, *, only: bytearray | None = None) -> Iterator[list[Prompt]]:
        for batch in self.prompts.batches(only=only):
            mine = [p for p in batch if in_share(p.id, self.index, self.count)]
            if mine:
                yield mine


class _Progress:
    """Engine events, sent to the parent in batches."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.events: list[list[Any]] = []

    def on_start(self, pending: int) -> None:
        return None

    def on_row(self, row: Mapping[str, Any]) -> None:
        self.rows.append(
            [
                row["model"],
                row["status"],
                row["error_type"],
                row.get("completion_tokens"),
                bool(row.get("cached")),
            ]
        )

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None:
        self.events.append(["retry", model, error.error_type, error.message, delay_s])

    def on_model_stopped(self, model: str, error: RequestError) -> None:
        self.events.append(["stopped", model, error.error_type, error.message, error.http_status])

    async def flush(self, channel: Channel) -> None:
        with anyio.CancelScope(shield=True):  # taken events must not be lost half sent
            await self._flush(channel)

    async def _flush(self, channel: Channel) -> None:
        events, self.events = self.events, []
        for event in events:
            await channel.send(*event)
        if self.rows:
            rows, self.rows = self.rows, []
            await channel.send("rows", rows)

    async def run(self, channel: Channel) -> None:
        while True:
            await anyio.sleep(PROGRESS_INTERVAL_S)
            await self.flush(channel)


def main(argv: list[str]) -> None:
    """`python -m llamabatch.runs.workerproc FD`: the pickled spec on stdin, the socket at FD."""
    spec = pickle.load(sys.stdin.buffer)
    _run(spec, socket.socket(fileno=int(argv[0])))


def _run(spec: WorkerSpec, sock: socket.socket) -> None:
    # The parent decides (it sends stop, then cancel), also when a SIGTERM reaches the
    # whole process group (systemd's KillMode=control-group, kill -TERM -PGID).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=spec.log_level, format=f"%(levelname)s worker {spec.index}: %(message)s"
    )
    anyio.run(_work, spec, sock)


async def _work(spec: WorkerSpec, sock: socket.socket) -> None:
    channel = await Channel.open(sock)
    config = spec.config
    writer = ResultWriter(config.output, spec.writer_id, rows_per_part=config.engine.part_rows)
    writer.attach(pa.ipc.read_schema(pa.py_buffer(spec.schema)))
    progress = _Progress()
    try:
        with redacted_logs(Redactor(config.secrets())):
            await _drive(spec, channel, writer, progress)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(functools.partial(writer.close, dedupe_keys=False))
            if not channel.closed:
                await progress.flush(channel)
                await channel.send("done")
            await channel.aclose()


async def _drive(
    spec: WorkerSpec, channel: Channel, writer: ResultWriter, progress: _Progress
) -> None:
    config = spec.config
    load = functools.partial(load_done, config.output, keep_errors=spec.keep_errors)
    done = await anyio.to_thread.run_sync(load)
    prompts = PromptSet(config.input, limit=config.limit, layout=Layout.of(config))
    prompts.report = spec.scan
    mine = share_config(config, spec.index, spec.count)
    totals = model_concurrency(config)
    limits = SharedLimits(
        channel,
        [(s, t) for s, t in zip(model_concurrency(mine), totals, strict=True)],
        max_wait_s=config.engine.max_retry_after_s,
    )
    lanes = []
    for i, model in enumerate(mine.models):
        lane = Lane.build(model, mine, model.resolve_api_key(), prompt_renderer(model))
        lane.admission, lane.breaker = limits.admissions[i], limits.breakers[i]
        lanes.append(lane)
    sink = Scoring.from_config(config).sink(writer)
    rows = RowBuilder(spec.run_id, spec.scan.extra_types, Redactor(config.secrets()))
    async with Transport(max_response_bytes=config.engine.max_response_bytes) as transport:
        engine = Engine(
            config=mine, lanes=lanes, transport=transport, sink=sink, rows=rows, observer=progress
        )
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:

                def handle(message: list[Any]) -> None:
                    if message[0] == "stop":
                        engine.stop()
                    elif message[0] == "cancel":
                        scope.cancel()

                async def serve() -> None:
                    await channel.serve(handle)
                    scope.cancel()  # the parent is gone: stop as a second Ctrl-C would

                tg.start_soon(serve)
                tg.start_soon(limits.run)
                tg.start_soon(flush_periodically, writer, config.engine.part_interval_s)
                tg.start_soon(progress.run, channel)
                await engine.run(
                    _Share(prompts, spec.index, spec.count), done, lambda m: spec.only.get(m)
                )
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    main(sys.argv[1:])
