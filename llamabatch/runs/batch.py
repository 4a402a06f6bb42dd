"""Batch mode: every pending row through its provider's Batch API, crash-safe and resumable.

A run in batch mode
1. re-attaches to the chunks the batch log (`results/batchlog.py`) holds that
   were never collected: uploads what was not uploaded, creates what was not
   created (after looking for a batch made from the same file, in case a kill
   came between the provider creating it and the log recording it) — unless a
   row of it was stored meanwhile (say, online): such a chunk is dropped and its
   other rows go into a new file;
2. submits the rows still pending — not stored `ok`, not in a chunk in flight,
   not answered by the response cache — in request files split by the
   provider's request-count and byte limits, each logged before the next step;
3. polls the batches (backing off from `batch_poll_s` to `batch_poll_max_s`,
   transient failures retried by the online retry policy) and collects each
   finished one into result rows (`runs/batchrows.py`).
A batch whose creation failed after retries may still exist at the provider: its
rows are stored as errors (the run exits 3) and its chunk stays in the log for
the next run. A first Ctrl-C stops waiting without cancelling anything: the next
run re-attaches. `llamabatch batches RESULTS [--cancel]` lists (or cancels) them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.engine.retry import RetryPolicy
from llamabatch.errors import RequestError, UsageError
from llamabatch.prompts import Prompt, PromptSet
from llamabatch.results import DoneIndex, RowBuilder, Sink
from llamabatch.results.batchlog import BatchLog, Chunk, write_request_file
from llamabatch.results.cache import ResponseCache
from llamabatch.runs.batchrows import Collector, model_params
from llamabatch.wire import Transport, provider_for
from llamabatch.wire.batches import (
    BatchEndpoints,
    BatchInfo,
    batch_list,
    custom_id,
    file_id,
    json_object,
    request_line,
    split_custom_id,
)

log = logging.getLogger(__name__)
FILE_TIMEOUT_S: Final = 3600.0  # uploading or downloading a file of up to 200 MB
# Finished batches collected in one pass over the prompt set: bounds the result index in memory.
COLLECT_MAX_ROWS: Final = 200_000


@dataclass
class BatchDriver:
    """Runs one batch-mode pass over a run's pending rows (see the module docstring)."""

    config: RunConfig  # base URLs of servers the run started filled in
    prompts: PromptSet
    done: DoneIndex
    only: Callable[[str], bytearray | None]
    sink: Sink
    rows: RowBuilder
    observer: Any  # the run's Tally: on_row, on_batch
    transport: Transport
    cache: ResponseCache | None
    stopping: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        self.log = BatchLog(self.config.output)
        self.models = {m.name: m for m in self.config.models}
        self.policy = RetryPolicy.from_config(self.config.engine)
        self.rng = random.Random()
        self.collector = Collector(self)

    def stop(self) -> None:
        """Stop submitting and waiting; batches keep running (the next run re-attaches)."""
        self.stopping.set()

    async def run(self) -> None:
        for chunk in [c for c in self.log.pending() if c.model in self.models]:
            if not self.stopping.is_set():
                await self._launch(chunk, reattach=True)
        pending = [c for c in self.log.pending() if c.model in self.models]
        in_flight = await anyio.to_thread.run_sync(self._covered, pending)
        for model in self.config.models:
            if not self.stopping.is_set():
                await self._submit(model, in_flight)
        await self._wait()

    def _covered(self, chunks: list[Chunk]) -> set[str]:
        """The custom_ids of chunks in flight: never submitted again."""
        return {cid for chunk in chunks for cid in self.log.custom_ids(chunk)}

    # Submitting.

    async def _submit(self, model: ModelConfig, in_flight: set[str]) -> None:
        assert model.batch is not None
        plan = _Plan(self, model, in_flight)
        seq = 0
        while not self.stopping.is_set():
            lines, cached = await anyio.to_thread.run_sync(plan.fill)
            for row in cached:
                self.collector.write(row, None)
            if not lines:
                return
            name = f"{model.name}-{self.rows.run_id}-{seq:04d}"
            seq += 1
            await anyio.to_thread.run_sync(write_request_file, self.log.path(name), lines)
            await self._record("prepared", name, model=model.name, requests=len(lines))
            await self._launch(self.log.chunks[name])

    async def _launch(self, chunk: Chunk, *, reattach: bool = False) -> None:
        """Upload and create what the log says was not yet; never create a batch twice."""
        model = self.models[chunk.model]
        endpoints = self.endpoints(model)
        assert model.batch is not None
        step = "find"
        try:
            if chunk.batch_id is None and chunk.creating:
                found = await self._find(endpoints, chunk)
                if found is not None:
                    await self._record("created", chunk.name, batch_id=found)
                    return
            answered = functools.partial(self._answered, chunk)
            if reattach and chunk.batch_id is None and await anyio.to_thread.run_sync(answered):
                # Never pay for a stored row: what is left goes into a new request file.
                await anyio.to_thread.run_sync(self._abandon, chunk)
                return
            step = "upload"
            if chunk.file_id is None:
                upload = (self.log.path(chunk.name), model.batch.file_purpose)
                body = await self.call(endpoints.upload(), upload=upload)
                await self._record("uploaded", chunk.name, file_id=file_id(body))
            if chunk.batch_id is None:
                await self._record("creating", chunk.name)
                step = "create"
                assert chunk.file_id is not None
                metadata = {"llamabatch_chunk": chunk.name}
                body = await self.call(endpoints.create(chunk.file_id, metadata))
                info = BatchInfo.from_json(json_object(body, "batch create"))
                await self._record("created", chunk.name, batch_id=info.id)
        except RequestError as exc:
            if step == "upload" or (step == "create" and not exc.retryable):
                await self.collector.fail(chunk, exc)  # surely no batch: its rows fail
                return
            # The provider may have made the batch: the rows fail for now, and the chunk
            # stays in the log, so the next run looks for that batch before making one.
            doing = "creating" if step == "create" else "looking for"
            error = RequestError(
                exc.error_type,
                f"{doing} the batch of request file {chunk.name} failed ({exc.message}); "
                "run again: the next run looks for that batch by its file before making one",
                http_status=exc.http_status,
            )
            log.warning("%s", error.message)
            await self.collector.fail(chunk, error, forget=False)

    def _answered(self, chunk: Chunk) -> bool:
        """Whether a row of this chunk is stored already (ok, or an error kept; blocking)."""
        done = self.done.is_done
        return any(done(*split_custom_id(cid)) for cid in self.log.custom_ids(chunk))

    def _abandon(self, chunk: Chunk) -> None:
        """Drop a chunk no batch was made from (blocking)."""
        self.log.record("collected", chunk.name, batch_id=None, abandoned=True)
        self.log.path(chunk.name).unlink(missing_ok=True)

    async def _find(self, endpoints: BatchEndpoints, chunk: Chunk) -> str | None:
        """The provider's batch made from this chunk's file, if a kill hid it from the log."""
        after = None
        while True:
            batches, after = batch_list(await self.call(endpoints.listing(after)))
            for info in batches:
                if info.input_file_id == chunk.file_id:
                    return info.id
            if after is None:
                return None

    # Waiting and collecting.

    async def _wait(self) -> None:
        delay = self.config.engine.batch_poll_s
        while not self.stopping.is_set():
            waiting = [c for c in self.log.pending() if c.batch_id and c.model in self.models]
            if not waiting:
                return
            ready = []
            for chunk in waiting:
                info = await self._poll(chunk)
                if info is not None and info.terminal:
                    ready.append((chunk, info))
            self._show()
            if ready:
                try:
                    for group in _groups(ready):
                        await self.collector.collect(group)
                    self._show()
                    continue
                except RequestError as exc:  # retried already: try again after the next wait
                    log.warning("downloading batch results failed: %s", exc.message)
            with anyio.move_on_after(delay):
                await self.stopping.wait()
            delay = min(delay * 2, self.config.engine.batch_poll_max_s)

    async def _poll(self, chunk: Chunk) -> BatchInfo | None:
        assert chunk.batch_id is not None
        endpoints = self.endpoints(self.models[chunk.model])
        try:
            body = await self.call(endpoints.retrieve(chunk.batch_id))
        except RequestError as exc:
            log.warning("%s: polling batch %s failed: %s", chunk.name, chunk.batch_id, exc.message)
            return None
        info = BatchInfo.from_json(json_object(body, "batch"))
        counts = {"completed": info.completed, "failed": info.failed, "total": info.total}
        if (info.status, counts) != (chunk.status, chunk.counts):
            await self._record("status", chunk.name, status=info.status, counts=counts)
        return info

    def _show(self) -> None:
        """Per model: batch states and request counts, for the progress bar."""
        on_batch = getattr(self.observer, "on_batch", None)
        if on_batch is None:
            return
        for model in self.models:
            chunks = [c for c in self.log.chunks.values() if c.model == model and c.batch_id]
            states = Counter(c.status or "submitted" for c in chunks if not c.collected)
            counts = Counter[str]()
            for c in chunks:
                counts.update(c.counts)
            on_batch(model, {"states": dict(states), **counts})

    # Plumbing.

    def endpoints(self, model: ModelConfig) -> BatchEndpoints:
        return BatchEndpoints(model, model.resolve_api_key())

    async def call(self, request: Any, **kwargs: Any) -> bytes:
        """One Files/Batches request, retried like an online request; a 2xx body or raises."""
        big = "upload" in kwargs or "download" in kwargs
        timeout = FILE_TIMEOUT_S if big else self.config.engine.timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                status, headers, body = await self.transport.call(request, timeout, **kwargs)
                if 200 <= status < 300:
                    return body
                raise provider_for("openai").error_for_status(status, headers, body)
            except RequestError as exc:
                delay = self.policy.delay(attempt, exc, self.rng)
                if delay is None:
                    exc.message = f"{request.method} {request.url}: {exc.message}"
                    raise
                await anyio.sleep(delay)

    async def _record(self, event: str, chunk: str, **data: Any) -> None:
        await anyio.to_thread.run_sync(lambda: self.log.record(event, chunk, **data))


def _groups(ready: list[tuple[Chunk, BatchInfo]]) -> Iterator[list[tuple[Chunk, BatchInfo]]]:
    """Finished chunks in groups of at most COLLECT_MAX_ROWS requests (at least one each)."""
    group: list[tuple[Chunk, BatchInfo]] = []
    rows = 0
    for entry in ready:
        if group and rows + entry[0].requests > COLLECT_MAX_ROWS:
            yield group
            group, rows = [], 0
        group.append(entry)
        rows += entry[0].requests
    yield group


class _Plan:
    """One model's pending rows, turned into request files of at most its provider's limits."""

    def __init__(self, driver: BatchDriver, model: ModelConfig, in_flight: set[str]) -> None:
        assert model.batch is not None
        self.driver = driver
        self.model = dataclasses.replace(model, stream=False)  # a batch line is not streamed
        self.limits = model.batch
        self.in_flight = in_flight
        self.provider = provider_for(model.provider)
        self.api_key = model.resolve_api_key()
        self.params, self.params_json = model_params(driver.config, model)
        self.batches: Iterator[list[Prompt]] = driver.prompts.batches(only=driver.only(model.name))
        self.items: deque[tuple[Prompt, int]] = deque()
        self.carry: bytes | None = None  # a line that did not fit the last file

    def fill(self) -> tuple[list[bytes], list[dict[str, Any]]]:
        """The next request file's lines, and rows answered by the cache meanwhile (blocking)."""
        lines: list[bytes] = [self.carry] if self.carry else []
        size = len(self.carry or b"")
        self.carry = None
        cached: list[dict[str, Any]] = []
        while len(lines) < self.limits.max_requests and self._more():
            prompt, sample = self.items.popleft()
            line = self._line(prompt, sample, cached)
            if line is None:
                continue
            if size + len(line) > self.limits.max_bytes and lines:
                self.carry = line
                break
            lines.append(line)
            size += len(line)
        return lines, cached

    def _more(self) -> bool:
        while not self.items:
            batch = next(self.batches, None)
            if batch is None:
                return False
            pending = self.driver.done.pending(self.model.name, batch, self.driver.config.repeats)
            self.items.extend((prompt, sample) for prompt, sample, _ in pending)
        return True

    def _line(self, prompt: Prompt, sample: int, cached: list[dict[str, Any]]) -> bytes | None:
        if prompt.turns is not None:
            raise UsageError(
                f"{self.driver.config.input}: prompt {prompt.id!r} is a conversation (turns): "
                "each turn needs the reply before it, which a batch cannot give; run it online"
            )
        line_id = custom_id(self.model.name, prompt.id, sample)
        if line_id in self.in_flight:
            return None
        params, params_json = self.params, self.params_json
        if prompt.params:
            params, params_json = model_params(self.driver.config, self.model, prompt.params)
        request = self.provider.build_request(self.model, prompt.messages, params, self.api_key)
        cache = self.driver.cache
        if cache is not None:
            stored = cache.get(cache.key(self.model, request, sample))
            if stored is not None:
                job = self.driver.collector.job(self.model, prompt, sample, params_json)
                cached.append(self.driver.rows.from_cache(job, stored))
                return None
        return request_line(line_id, request)
