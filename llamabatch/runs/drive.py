"""Driving a run once its output is open: the engine and what runs beside it.

Beside the engine run the local servers it needs, the flusher that turns the
journal into Parquet parts and fsyncs it, the client's self-check, and (for
the command line) the signal handler that stops a run gracefully.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from llamabatch.config import RunConfig
from llamabatch.engine import Engine, Lane, Observer
from llamabatch.engine.monitor import LoopMonitor, combine
from llamabatch.errors import RequestError, raise_sole_usage_error
from llamabatch.prompts import PromptSet
from llamabatch.results import DoneIndex, ResultWriter, RowBuilder, Sink
from llamabatch.results.cache import ResponseCache
from llamabatch.results.remote import Remote, remote_of
from llamabatch.runs.flushing import flush_periodically, store_cached
from llamabatch.runs.servers import local_servers, prompt_renderer
from llamabatch.wire import Transport

if TYPE_CHECKING:
    from llamabatch.runs.batch import BatchDriver
    from llamabatch.runs.raypool import RayPool
    from llamabatch.runs.workers import WorkerPool

log = logging.getLogger(__name__)
LEASE_POLL_S = 0.5  # how soon a run stops once its output's lease is lost
RAY_SOURCES = {  # what a --ray run's client figures cover
    "loop_lag": "the share actors' event loops, which time the requests: the highest of each "
    "percentile over the actors (a killed actor's is not known)",
    "cpu_s": "the driver process, every share actor's process and the limiter actor's (user + "
    "system, each actor's process from its start); null when an actor was killed (its CPU is "
    "not known); Ray's own processes (GCS, raylet, agents) are not counted",
    "max_rss_mb": "the sum of the driver's and each actor process's peak resident memory (a "
    "killed actor's is not known)",
    "client_bound": "any share actor's own flag (loop lag p99 or its CPU share of a core)",
}


@dataclass
class Tally:
    """Counts rows as they finish and forwards events to the caller's observer."""

    forward: Observer | None
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cached: int = 0

    def on_start(self, pending: int) -> None:
        if self.forward is not None:
            self.forward.on_start(pending)

    def on_row(self, row: Mapping[str, Any]) -> None:
        if row["status"] == "ok":
            self.ok += 1
            self.cached += bool(row.get("cached"))
        else:
            self.errors[row["error_type"]] += 1
        if self.forward is not None:
            self.forward.on_row(row)

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None:
        if self.forward is not None:
            self.forward.on_retry(model, error, delay_s)

    def on_model_stopped(self, model: str, error: RequestError) -> None:
        """Optional for observers: a model was stopped (see `Engine`); its rows fail unsent."""
        notify = getattr(self.forward, "on_model_stopped", None)
        if notify is not None:
            notify(model, error)

    def on_batch(self, model: str, info: Mapping[str, Any]) -> None:
        """Batch mode: a model's batch states and request counts (observers may skip it)."""
        forward = getattr(self.forward, "on_batch", None)
        if forward is not None:
            forward(model, info)


@dataclass
class ActiveRun:
    """One run's moving parts, once the output is open."""

    config: RunConfig
    prompts: PromptSet
    done: DoneIndex
    writer: ResultWriter
    sink: Sink
    rows: RowBuilder
    tally: Tally
    handle_signals: bool
    only: Callable[[str], bytearray | None]
    monitor: LoopMonitor = field(default_factory=LoopMonitor)
    cache: ResponseCache | None = None
    keep_errors: bool = False
    ray: bool = False  # run as Ray actors (see runs/raypool.py)
    ray_address: str | None = None
    pool: WorkerPool | RayPool | None = None  # the engine, when it runs in processes/actors

    async def drive(self) -> bool:
        """Run the engine with its helpers (servers, flusher, monitor, signals); True if stopped."""
        per_model = self.rows_per_sample() * self.config.repeats
        pending = sum(max(0, per_model - self.done.count(m.name)) for m in self.config.models)
        self.tally.on_start(pending)
        limit = self.config.engine.max_response_bytes
        async with (
            Transport(max_response_bytes=limit) as transport,
            local_servers(self.config) as config,
        ):
            engine: Engine | BatchDriver | WorkerPool | RayPool
            if config.mode == "batch":
                from llamabatch.runs.batch import BatchDriver  # not loaded by a streamed run

                engine = BatchDriver(
                    config=config,
                    prompts=self.prompts,
                    done=self.done,
                    only=self.only,
                    sink=self.sink,
                    rows=self.rows,
                    observer=self.tally,
                    transport=transport,
                    cache=self.cache,
                )
                work = engine.run
            elif config.engine.workers > 1 or self.ray:
                engine = self.pool = self._pool(config)
                work = engine.run
            else:
                lanes = [
                    Lane.build(m, config, m.resolve_api_key(), prompt_renderer(m))
                    for m in config.models
                ]
                engine = Engine(
                    config=config,
                    lanes=lanes,
                    transport=transport,
                    sink=self.sink,
                    rows=self.rows,
                    observer=self.tally,
                    cache=self.cache,
                )
                work = functools.partial(engine.run, self.prompts, self.done, self.only)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(flush_periodically, self.writer, config.engine.part_interval_s)
                    if self.cache is not None:
                        tg.start_soon(store_cached, self.cache)
                    tg.start_soon(self.monitor.watch)
                    if (remote := remote_of(config.output)) is not None:
                        tg.start_soon(_watch_lease, remote)
                    with anyio.CancelScope() as scope:
                        if self.handle_signals:
                            tg.start_soon(_watch_signals, engine, scope, config.engine.grace_s)
                        await work()
                    tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise_sole_usage_error(group)  # batch mode: a conversation in the prompts
                raise
            return engine.stopping.is_set()

    def rows_per_sample(self) -> int:
        """Result rows one sample of the prompts makes: a conversation writes one per turn.

        Stored rows are counted the same way, so the progress bar's total is in rows.
        Under `--limit`, a file's mean turns per prompt stand in for its first prompts'.
        """
        count, report = self.prompts.count(), self.prompts.report
        if report is None or not report.valid or report.turn_rows <= report.valid:
            return count
        if count == report.valid:
            return report.turn_rows
        return round(count * report.turn_rows / report.valid)

    def _pool(self, config: RunConfig) -> WorkerPool | RayPool:
        """The engine as worker processes or Ray actors, sharing one coordinator's limits."""
        assert self.prompts.report is not None  # validated in open_output
        shared: dict[str, Any] = {
            "config": config,
            "writer": self.writer,
            "done": self.done,
            "scan": self.prompts.report,
            "only": self.only,
            "tally": self.tally,
            "keep_errors": self.keep_errors,
        }
        # Keys name endpoints as configured, before the run started its servers.
        endpoints = self.cache.endpoints if self.cache is not None else {}
        if self.ray:
            from llamabatch.runs.raypool import RayPool

            return RayPool(**shared, address=self.ray_address, cache_endpoints=endpoints)
        from llamabatch.runs.workers import WorkerPool

        return WorkerPool(**shared, cache_endpoints=endpoints)

    def summary(self) -> dict[str, Any]:
        """What the manifest records at the end: counts and how the client fared."""
        # A batch-mode run times no request: its loop lag cannot distort any figure.
        sent = 0 if self.config.mode == "batch" else self.tally.ok + sum(self.tally.errors.values())
        client = self.monitor.report(sent=sent)
        clients = getattr(self.pool, "clients", None)  # worker processes' or actors' figures
        if clients is not None:
            client = combine(client, clients)
            if self.ray:
                client["sources"] = RAY_SOURCES
                client["actors"] = client.pop("workers")
        return {
            "counts": {
                "ok": self.tally.ok,
                "error": dict(self.tally.errors),
                "already_done": self.done.count(),
                "cached": self.tally.cached,
            },
            "client": client,
        }


async def _watch_lease(remote: Remote) -> None:
    """Stop the run (`LeaseLost`) once another run holds its output's lease."""
    while True:
        await anyio.sleep(LEASE_POLL_S)
        remote.writable()


async def _watch_signals(
    engine: Engine | BatchDriver | WorkerPool | RayPool, scope: anyio.CancelScope, grace_s: float
) -> None:
    """First SIGINT/SIGTERM: stop admitting, cancel in-flight after a grace; second: cancel now."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if engine.stopping.is_set():
                scope.cancel()
                return
            engine.stop()
            scope.deadline = anyio.current_time() + grace_s
            log.warning(
                "interrupted: no new requests; waiting up to %g s for %s in flight "
                "(interrupt again to cancel them now)",
                grace_s,
                "the requests",
            )
