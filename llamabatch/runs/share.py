"""One worker's share of a run: its prompts, its part of each limit, its engine.

A share runs the normal engine on the prompts whose id hashes to it (so a
conversation's turns stay together), with the run's limits leased from a
coordinator (any `HubLink`: the parent process's socket, a Ray actor), and
journals its rows into the run's directory under its own writer id: its own
journal segments and part files, so nothing is shared but the directory,
whose lock the run's parent (or Ray driver) holds.
"""

from __future__ import annotations

import functools
import logging
import socket
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.abc
import pyarrow as pa

from llamabatch.config import RunConfig
from llamabatch.config.outputs import staging_dir
from llamabatch.engine import Engine, Lane
from llamabatch.engine.coordinator import HubLink, SharedLimits
from llamabatch.engine.monitor import LoopMonitor
from llamabatch.errors import RequestError, UsageError
from llamabatch.prompts import Layout, Prompt, PromptSet, ScanReport
from llamabatch.redact import Redactor, redacted_logs
from llamabatch.results import ResultWriter, RowBuilder, load_done
from llamabatch.results.cache import ResponseCache
from llamabatch.results.remote import stage
from llamabatch.runs.flushing import flush_periodically, store_cached
from llamabatch.runs.servers import prompt_renderer
from llamabatch.scoring import Scoring
from llamabatch.wire import Transport


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
    # Per model, what identifies its endpoint in response-cache keys (the parent's labels:
    # a server the run started has a new port in every run); empty without a cache.
    cache_endpoints: Mapping[str, str] = field(default_factory=dict)


def worker_spec(
    writer: ResultWriter,
    config: RunConfig,
    scan: ScanReport,
    only: Mapping[str, bytearray | None],
    keep_errors: bool,
    *,
    index: int,
    count: int,
    writer_id: str,
    cache_endpoints: Mapping[str, str] | None = None,
) -> WorkerSpec:
    """The spec of share `index` of `count`, for a worker process or a Ray actor alike."""
    return WorkerSpec(
        index=index,
        count=count,
        writer_id=writer_id,
        run_id=writer.run_id,
        config=config,
        schema=writer.schema.serialize().to_pybytes(),
        scan=scan,
        only=only,
        keep_errors=keep_errors,
        log_level=logging.getLogger("llamabatch").getEffectiveLevel(),
        cache_endpoints=dict(cache_endpoints or {}),
    )


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


class Progress:
    """Engine events, kept until the run's parent takes them (`take`)."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.events: list[list[Any]] = []
        self.count = 0  # rows in all

    def on_start(self, pending: int) -> None:
        return None

    def on_row(self, row: Mapping[str, Any]) -> None:
        self.count += 1
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

    def take(self) -> list[list[Any]]:
        """The events and rows since the last call, as messages (`["rows", rows]` last)."""
        events, self.events = self.events, []
        if self.rows:
            events.append(["rows", self.rows])
            self.rows = []
        return events


class ShareRun:
    """One share of a run, from its journal's start to its close; `stop` and `cancel` as the
    run's parent says."""

    def __init__(self, spec: WorkerSpec, link: HubLink) -> None:
        self.spec = spec
        self.link = link
        self.progress = Progress()
        self.monitor = LoopMonitor()  # this share's own loop: it times the requests
        self.scope = anyio.CancelScope()
        self.engine: Engine | None = None
        self._stopping = False

    def stop(self) -> None:
        """Admit no new work; requests in flight finish."""
        self._stopping = True
        if self.engine is not None:
            self.engine.stop()

    def cancel(self) -> None:
        """Cancel requests in flight (their rows say so)."""
        self.scope.cancel()

    async def run(self, beside: Callable[[anyio.abc.TaskGroup], None] | None = None) -> None:
        """Send the share's work; `beside` starts what runs with it (the parent's channel)."""
        config = self.spec.config
        if (uri := config.output_uri) is not None:
            # This machine's staging directory: the journal stays on its local disk.
            config = replace(config, output=staging_dir(uri))
            self.spec = replace(self.spec, config=config)
            stage(config.output, uri)
        writer = ResultWriter(
            config.output, self.spec.writer_id, rows_per_part=config.engine.part_rows
        )
        writer.attach(pa.ipc.read_schema(pa.py_buffer(self.spec.schema)))
        cache = None
        try:
            if config.cache is not None:  # SQLite in WAL mode: shared safely by processes
                cache = ResponseCache(
                    config.cache.path,
                    ttl_s=config.cache.ttl_s,
                    refresh=config.cache.refresh,
                    endpoints=self.spec.cache_endpoints,
                )
            with redacted_logs(Redactor(config.secrets())):
                await self._drive(writer, cache, beside)
        finally:
            with anyio.CancelScope(shield=True):
                close = functools.partial(writer.close, dedupe_keys=False)
                await anyio.to_thread.run_sync(close)
                if cache is not None:
                    await anyio.to_thread.run_sync(cache.close)

    async def _drive(
        self,
        writer: ResultWriter,
        cache: ResponseCache | None,
        beside: Callable[[anyio.abc.TaskGroup], None] | None,
    ) -> None:
        spec, config = self.spec, self.spec.config
        if not config.input.exists():  # a node of a Ray cluster without the shared storage
            raise UsageError(
                f"{config.input}: not found on {socket.gethostname()}; every node needs the "
                "prompt file at the same path (shared storage, or a copy on each)"
            )
        load = functools.partial(load_done, config.output, keep_errors=spec.keep_errors)
        done = await anyio.to_thread.run_sync(load)
        prompts = PromptSet(config.input, limit=config.limit, layout=Layout.of(config))
        prompts.report = spec.scan
        mine = share_config(config, spec.index, spec.count)
        totals = model_concurrency(config)
        limits = SharedLimits(
            self.link,
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
            self.engine = engine = Engine(
                config=mine,
                lanes=lanes,
                transport=transport,
                sink=sink,
                rows=rows,
                observer=self.progress,
                cache=cache,
            )
            if self._stopping:
                engine.stop()
            async with anyio.create_task_group() as tg:
                tg.start_soon(limits.run)
                tg.start_soon(self.monitor.watch)
                tg.start_soon(flush_periodically, writer, config.engine.part_interval_s)
                if cache is not None:
                    tg.start_soon(store_cached, cache)
                if beside is not None:
                    beside(tg)
                with self.scope:
                    share = _Share(prompts, spec.index, spec.count)
                    await engine.run(share, done, lambda m: spec.only.get(m))
                tg.cancel_scope.cancel()
