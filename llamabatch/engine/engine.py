"""Scheduling: per-model worker pools pulling lazily from the prompt stream.

Each model has its own reader of the prompt set, its own pool of workers, its
own admission control (rate limits, AIMD on 429s) and circuit breaker, so a
slow, rate-limited or failing model never holds back the others; a global
limiter caps the requests in flight across models. A worker holds its
concurrency slots only while a request is on the wire (never while waiting
or backing off) and releases them only after the finished row is journalled.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import Any, Protocol

import anyio
import orjson

from llamabatch.config import EngineConfig, RunConfig
from llamabatch.engine.embedding import embed_rows
from llamabatch.engine.lane import Lane
from llamabatch.engine.ratelimit import NO_LIMIT
from llamabatch.engine.retry import RetryPolicy
from llamabatch.engine.workqueue import PromptSource, Workers, WorkQueue
from llamabatch.errors import RequestError
from llamabatch.prompts import Prompt
from llamabatch.prompts.text import estimate_prompt_tokens
from llamabatch.requestspec import merge_params
from llamabatch.results import Sink
from llamabatch.results.cache import ResponseCache
from llamabatch.results.resume import DoneIndex
from llamabatch.results.rowbuilder import Job, RowBuilder
from llamabatch.wire import HttpRequest, Response
from llamabatch.wire.transport import Transport

log = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS_ESTIMATE = 256


class Observer(Protocol):
    """Receives engine events (progress bars, live stats); must not block."""

    def on_start(self, pending: int) -> None: ...

    def on_row(self, row: Mapping[str, Any]) -> None: ...

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None: ...


class Engine:
    """Runs every (prompt, model, sample) not yet done, writing one row each."""

    def __init__(
        self,
        *,
        config: RunConfig,
        lanes: list[Lane],
        transport: Transport,
        sink: Sink,
        rows: RowBuilder,
        observer: Observer | None = None,
        seed: int | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.config = config
        self.lanes = lanes
        self.transport = transport
        self.sink = sink
        self.rows = rows
        self.observer = observer
        self.cache = cache
        self.policy = RetryPolicy.from_config(config.engine)
        self.limiter = anyio.CapacityLimiter(config.engine.concurrency)
        # Each model's workers are capped already; the global cap binds only when they add up.
        shared = sum(lane.workers for lane in lanes) > config.engine.concurrency
        self.slot = self.limiter if shared else NO_LIMIT
        self.rng = random.Random(seed)
        self.stopping = anyio.Event()

    def stop(self) -> None:
        """Admit no new work; requests in flight finish (or are cancelled by the caller)."""
        self.stopping.set()

    async def run(
        self,
        prompts: PromptSource,
        done: DoneIndex,
        only: Callable[[str], bytearray | None] | None = None,
    ) -> None:
        """Send all pending work; returns when every started row is written.

        `only(model)` optionally marks the rows with work left (see resume.ResumeScan).
        """
        async with anyio.create_task_group() as tg:
            for index, lane in enumerate(self.lanes):
                queue = WorkQueue(
                    model=lane.config.name,
                    prompts=prompts,
                    done=done,
                    repeats=self.config.repeats,
                    arrivals=_arrivals(self.config.engine, index),
                    stopping=self.stopping,
                    only=None if only is None else only(lane.config.name),
                )
                Workers(tg, lane.workers, partial(self._work, lane, queue)).grow()

    async def _work(self, lane: Lane, queue: WorkQueue, workers: Workers) -> None:
        if lane.embedder is not None:
            await embed_rows(self, lane, queue, workers)
            return
        while (item := await workers.take(queue)) is not None:
            if lane.stopped is not None:
                queue.unschedule()  # what is left fails at once, not at its arrival time
            await self._process(lane, *item)
            # A loop turn between finishing one request and starting the next:
            # when hundreds of streams end together, their next requests do not
            # all start in one turn while the sockets of the others go unread.
            await anyio.lowlevel.checkpoint()

    async def _process(
        self,
        lane: Lane,
        prompt: Prompt,
        sample: int,
        scheduled: float | None,
        replies: tuple[str, ...] = (),
    ) -> None:
        if prompt.turns is None:
            await self._send(lane, self._job(lane, prompt, sample, prompt.messages), scheduled)
        else:
            await self._converse(lane, prompt, sample, scheduled, replies)

    async def _converse(
        self,
        lane: Lane,
        prompt: Prompt,
        sample: int,
        scheduled: float | None,
        replies: tuple[str, ...],
    ) -> None:
        """Ask a conversation's turns in order, each after the replies to those before it.

        A turn that fails ends the conversation (its row says why). Turns whose
        replies are stored already (`replies`, when resuming) are not asked again.
        """
        assert prompt.turns is not None
        history = prompt.messages[:-1]  # the system message, if any
        for turn, step in enumerate(prompt.turns, start=1):
            messages = [*history, step.message]
            if turn <= len(replies):
                reply = replies[turn - 1]
            elif self.stopping.is_set():
                return  # the later turns are asked when the run resumes
            else:
                job = self._job(lane, prompt, sample, messages, turn)
                resp = await self._send(lane, job, scheduled)
                if resp is None:
                    return
                reply, scheduled = resp.text, None
            history = [*messages, {"role": "assistant", "content": reply}]

    def _job(
        self,
        lane: Lane,
        prompt: Prompt,
        sample: int,
        messages: list[dict[str, Any]],
        turn: int | None = None,
    ) -> Job:
        if prompt.params:
            params = merge_params(lane.params, prompt.params)
            params_json = orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()
        else:
            params, params_json = lane.params, lane.params_json
        estimate = _token_estimate(messages, params)
        job = Job(lane.config, prompt, sample, params, params_json, estimate, turn=turn)
        if turn is not None:
            job.messages = messages
        return job

    async def _send(self, lane: Lane, job: Job, scheduled: float | None) -> Response | None:
        """Every attempt of one chat request, until its row is written; its response if ok."""
        messages = job.messages or job.prompt.messages
        request = lane.provider.build_request(lane.config, messages, job.params, lane.api_key)
        cache_key = None
        if self.cache is not None:
            cache_key = self.cache.key(lane.config, request, job.sample)
            stored = await anyio.to_thread.run_sync(self.cache.get, cache_key)
            if stored is not None:
                self._write(self.rows.from_cache(job, stored))
                hit = Response()  # what a next turn needs of it: the reply
                hit.text_parts.append(stored.get("output_text") or "")
                return hit

        def fresh() -> Response:
            return Response(chunk_times=self.config.chunk_times)

        async def send(resp: Response) -> RequestError | None:
            return await self._attempt(lane, request, resp, messages, job.params)

        finish = partial(self._finish, job, cache_key=cache_key)
        return await self._attempts(lane, job, scheduled, fresh, send, finish)

    async def _attempts(
        self,
        lane: Lane,
        job: Job,
        scheduled: float | None,
        fresh: Callable[[], Response],
        send: Callable[[Response], Awaitable[RequestError | None]],
        finish: Callable[[Response, RequestError | None], None],
    ) -> Response | None:
        """Attempts of one request, within limits, breaker and retries, until `finish` is called
        with its outcome (while its slots are still held); its response if it succeeded.

        `job` carries the request's bookkeeping (waits, attempts, start).
        """
        waited_from = time.perf_counter() if scheduled is None else scheduled
        if scheduled is not None:
            job.scheduled_wall = time.time() - (time.perf_counter() - scheduled)
        resp: Response | None = None  # the latest attempt's
        while True:
            if lane.stopped is not None:
                job.queue_s += time.perf_counter() - waited_from
                finish(resp or fresh(), lane.not_sent())
                return None
            try:
                probe = await lane.breaker.wait() if lane.breaker.is_open else False
                ticket = lane.admission.take_now()
                if ticket is None:
                    ticket = await lane.admission.wait(job.token_estimate)
            except RequestError as refused:  # the model is down, or asks for too long a pause
                job.queue_s += time.perf_counter() - waited_from
                finish(fresh(), refused)
                return None
            async with lane.admission.slot, self.slot:
                job.queue_s += time.perf_counter() - waited_from
                job.attempts += 1
                if job.attempts == 1:
                    job.started_wall = time.time()
                resp = fresh()
                try:
                    error = await send(resp)
                except anyio.get_cancelled_exc_class():
                    finish(resp, RequestError("cancelled", "run interrupted in flight"))
                    raise
                self._observe(lane, job, resp, error, probe, ticket)
                delay = None if error is None else self._retry_delay(job, error)
                if error is not None and error.stops_model:
                    self._stop_lane(lane, error)
                    delay = None
                if delay is None:
                    finish(resp, error)
                    return resp if error is None else None
            assert error is not None
            if self.observer is not None:
                self.observer.on_retry(lane.config.name, error, delay)
            waited_from = time.perf_counter()
            with anyio.move_on_after(delay):
                await self.stopping.wait()
            if self.stopping.is_set():
                finish(resp, error)
                return None

    async def _attempt(
        self,
        lane: Lane,
        request: HttpRequest,
        resp: Response,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
    ) -> RequestError | None:
        try:
            await self.transport.send(request, lane.provider, resp, self.config.engine.timeout_s)
        except RequestError as exc:
            return exc
        if lane.counter is not None and None in (resp.prompt_tokens, resp.completion_tokens):
            await lane.counter.fill(self.transport, resp, messages, params)
        return None

    def _observe(
        self,
        lane: Lane,
        job: Job,
        resp: Response,
        error: RequestError | None,
        probe: bool,
        ticket: int,
    ) -> None:
        """Feed the outcome to the model's admission control and breaker."""
        admission = lane.admission
        admission.observe_headers(resp.headers or {}, ticket)
        lane.breaker.record(error, (job.prompt.id, job.sample), probe=probe)
        if error is None:
            admission.on_success(resp.total_tokens, job.token_estimate)
            return
        admission.on_failure(job.token_estimate)
        if error.error_type == "rate_limit":
            admission.on_rate_limited(error.retry_after_s)

    def _stop_lane(self, lane: Lane, error: RequestError) -> None:
        """Send nothing more to a model every request to which would fail the same way."""
        if lane.stopped is not None:
            return
        lane.stopped = error
        log.warning(
            "%s: stopped: %s; its remaining rows fail without being sent "
            "(fix this and run again to send them)",
            lane.config.name,
            error.message,
        )
        notify = getattr(self.observer, "on_model_stopped", None)
        if notify is not None:
            notify(lane.config.name, error)

    def _retry_delay(self, job: Job, error: RequestError) -> float | None:
        delay = self.policy.delay(job.attempts, error, self.rng)
        cap = self.policy.max_retry_after_s
        if delay is None and error.retryable and (error.retry_after_s or 0) > cap:
            error.message += (
                f" (Retry-After {error.retry_after_s:.0f} s exceeds max_retry_after_s = {cap:g})"
            )
        return delay

    def _finish(
        self,
        job: Job,
        resp: Response,
        error: RequestError | None,
        columns: Mapping[str, Any] | None = None,
        *,
        cache_key: str | None = None,
    ) -> None:
        """Make the row durable, then tell observers (a cancellation cannot split the two).

        `columns` are set on the row on top of what the row builder makes of it.
        """
        row = self.rows.build(job, resp, error)
        if columns:
            row.update(columns)
        self._write(row)
        if cache_key is not None and error is None and self.cache is not None:
            self.cache.put(cache_key, row)

    def _write(self, row: dict[str, Any]) -> None:
        self.sink.write(row)
        if self.observer is not None:
            self.observer.on_row(row)


def _arrivals(engine: EngineConfig, lane_index: int) -> Iterator[float] | None:
    """Scheduled send times (perf_counter clock) at `request_rate`, or None for a closed loop."""
    rate = engine.request_rate
    if rate is None:
        return None
    rng = random.Random(engine.arrival_seed * 1000 + lane_index)
    poisson = engine.arrival == "poisson"

    def times() -> Iterator[float]:
        t = time.perf_counter()
        while True:
            yield t
            t += rng.expovariate(rate) if poisson else 1.0 / rate

    return times()


def _token_estimate(messages: list[dict[str, Any]], params: Mapping[str, Any]) -> int:
    max_tokens = params.get("max_tokens") or DEFAULT_MAX_TOKENS_ESTIMATE
    return estimate_prompt_tokens(messages) + int(max_tokens)
