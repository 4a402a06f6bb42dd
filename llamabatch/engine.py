"""Scheduling: per-model worker pools pulling lazily from the prompt stream.

Each model has its own reader of the prompt set and its own pool of workers,
so a slow or failing model never blocks the others; a global limiter caps the
requests in flight across models. A worker holds its concurrency slots only
while a request is on the wire (never while backing off) and releases them
only after the finished row is in the journal.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import orjson
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.errors import RequestError
from llamabatch.metrics import estimate_tokens, message_chars, timings
from llamabatch.prompts import Prompt, PromptSet
from llamabatch.providers import Provider, Response, provider_for
from llamabatch.ratelimit import TokenBucket
from llamabatch.results import DoneIndex
from llamabatch.retry import RetryPolicy
from llamabatch.tokenizers import TokenCounter
from llamabatch.transport import Transport

DEFAULT_MAX_TOKENS_ESTIMATE = 256


class Observer(Protocol):
    """Receives engine events (progress bars, live stats); must not block."""

    def on_start(self, pending: int) -> None: ...

    def on_row(self, row: Mapping[str, Any]) -> None: ...

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None: ...


class Sink(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...


@dataclass
class Lane:
    """Everything the engine needs to send requests to one model."""

    config: ModelConfig
    provider: Provider
    api_key: str | None
    params: dict[str, Any]
    limiter: anyio.CapacityLimiter
    workers: int
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    row_template: dict[str, Any] = field(default_factory=dict)
    counter: TokenCounter | None = None

    @classmethod
    def build(cls, model: ModelConfig, config: RunConfig, api_key: str | None) -> Lane:
        workers = min(model.concurrency or config.engine.concurrency, config.engine.concurrency)
        return cls(
            config=model,
            provider=provider_for(model.provider),
            api_key=api_key,
            params={**config.defaults, **model.params},
            limiter=anyio.CapacityLimiter(workers),
            workers=workers,
            rpm=TokenBucket.per_minute(model.rpm) if model.rpm else None,
            tpm=TokenBucket.per_minute(model.tpm) if model.tpm else None,
            row_template={
                "model": model.name,
                "provider": model.provider,
                "model_id": model.model,
            },
            counter=TokenCounter.for_model(model, api_key),
        )


class Engine:
    """Runs every (prompt, model, sample) not yet done, writing one row each."""

    def __init__(
        self,
        *,
        config: RunConfig,
        lanes: list[Lane],
        transport: Transport,
        sink: Sink,
        make_row: Callable[[Prompt], dict[str, Any]],
        redact: Callable[[str], str],
        observer: Observer | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.lanes = lanes
        self.transport = transport
        self.sink = sink
        self.make_row = make_row
        self.redact = redact
        self.observer = observer
        self.policy = RetryPolicy.from_config(config.engine)
        self.limiter = anyio.CapacityLimiter(config.engine.concurrency)
        self.rng = random.Random(seed)
        self.run_id = ""

    async def run(self, run_id: str, prompts: PromptSet, done: DoneIndex) -> None:
        """Send all pending work; returns when every row is written (or on cancellation)."""
        self.run_id = run_id
        async with anyio.create_task_group() as tg:
            for lane in self.lanes:
                send, receive = anyio.create_memory_object_stream[tuple[Prompt, int]](lane.workers)
                tg.start_soon(self._feed, lane, prompts, done, send)
                for _ in range(lane.workers):
                    tg.start_soon(self._work, lane, receive.clone())
                receive.close()

    async def _feed(
        self,
        lane: Lane,
        prompts: PromptSet,
        done: DoneIndex,
        send: ObjectSendStream[tuple[Prompt, int]],
    ) -> None:
        name = lane.config.name
        repeats = self.config.repeats
        batches: Iterator[list[Prompt]] = prompts.batches()
        async with send:
            while True:
                batch = await anyio.to_thread.run_sync(next, batches, None)
                if batch is None:
                    return
                for prompt in batch:
                    for sample in range(repeats):
                        if not done.is_done(name, prompt.id, sample):
                            await send.send((prompt, sample))

    async def _work(self, lane: Lane, receive: ObjectReceiveStream[tuple[Prompt, int]]) -> None:
        async with receive:
            async for prompt, sample in receive:
                await self._process(lane, prompt, sample)

    async def _process(self, lane: Lane, prompt: Prompt, sample: int) -> None:
        params = {**lane.params, **prompt.params} if prompt.params else lane.params
        job = _Job(lane, prompt, sample, params, self._token_estimate(prompt, params))
        request = lane.provider.build_request(lane.config, prompt.messages, params, lane.api_key)
        waited_from = time.perf_counter()
        while True:
            job.attempts += 1
            if lane.rpm is not None:
                await lane.rpm.acquire()
            if lane.tpm is not None:
                await lane.tpm.acquire(job.token_estimate)
            async with lane.limiter, self.limiter:
                job.queue_s += time.perf_counter() - waited_from
                if job.attempts == 1:
                    job.started_wall = time.time()
                resp = Response()
                error: RequestError | None = None
                try:
                    await self.transport.send(
                        request, lane.provider, resp, self.config.engine.timeout_s
                    )
                    if lane.counter is not None and resp.completion_tokens is None:
                        await lane.counter.fill(self.transport, resp, prompt.messages)
                except RequestError as exc:
                    error = exc
                except anyio.get_cancelled_exc_class():
                    self._finish(job, resp, RequestError("cancelled", "run interrupted in flight"))
                    raise
                delay = None if error is None else self.policy.delay(job.attempts, error, self.rng)
                if delay is None:
                    self._finish(job, resp, error)
                    return
            assert error is not None
            if lane.tpm is not None:
                lane.tpm.refund(job.token_estimate)
            if self.observer is not None:
                self.observer.on_retry(lane.config.name, error, delay)
            waited_from = time.perf_counter()
            await anyio.sleep(delay)

    def _token_estimate(self, prompt: Prompt, params: Mapping[str, Any]) -> int:
        max_tokens = params.get("max_tokens") or DEFAULT_MAX_TOKENS_ESTIMATE
        return int(message_chars(prompt.messages) / 4) + int(max_tokens)

    def _finish(self, job: _Job, resp: Response, error: RequestError | None) -> None:
        """Build the row, make it durable, then tell observers."""
        lane = job.lane
        row = self.make_row(job.prompt)
        row.update(lane.row_template)
        row["run_id"] = self.run_id
        row["prompt_id"] = job.prompt.id
        row["sample"] = job.sample
        row["attempts"] = job.attempts
        row["queue_s"] = job.queue_s
        row["request_params"] = orjson.dumps(job.params, option=orjson.OPT_SORT_KEYS).decode()
        row["http_status"] = resp.http_status
        row["started_at"] = int(job.started_wall * 1e6)
        row["finished_at"] = int(time.time() * 1e6)
        if error is None:
            self._fill_ok(row, job, resp)
        else:
            row.update(
                status="error",
                error_type=error.error_type,
                error_message=self.redact(error.message),
                http_status=error.http_status or resp.http_status,
                usage_source="estimated",
                latency_s=max(0.0, resp.ended_t - resp.started_t),
            )
        self.sink.write(row)
        if self.observer is not None:
            self.observer.on_row(row)

    def _fill_ok(self, row: dict[str, Any], job: _Job, resp: Response) -> None:
        text = resp.text
        usage_source = resp.usage_source or "server"
        prompt_tokens, completion_tokens = resp.prompt_tokens, resp.completion_tokens
        if completion_tokens is None:
            usage_source = "estimated"
            completion_tokens = estimate_tokens(text + "".join(resp.reasoning_parts))
            if prompt_tokens is None:
                prompt_tokens = round(message_chars(job.prompt.messages) / 4)
        total = resp.total_tokens
        if total is None and prompt_tokens is not None:
            total = prompt_tokens + completion_tokens
        if job.lane.tpm is not None:
            job.lane.tpm.refund(job.token_estimate - (total or 0))
        row.update(
            status="ok",
            output_text=text,
            finish_reason=resp.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=total,
            usage_source=usage_source,
            **timings(resp, completion_tokens),
            **resp.extra_columns(),
        )


@dataclass(slots=True)
class _Job:
    """One (prompt, model, sample) on its way through its attempts."""

    lane: Lane
    prompt: Prompt
    sample: int
    params: Mapping[str, Any]
    token_estimate: int
    attempts: int = 0
    queue_s: float = 0.0
    started_wall: float = 0.0
