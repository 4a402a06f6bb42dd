"""Embedding lanes: rows packed into requests, each row still written on its own.

A worker of a `task = "embed"` model takes a row, then as many more already
read as fit in `batch_inputs` inputs and about `batch_tokens` tokens, and
sends them as one request through the same limits, breaker and retries as a
chat request (a retry sends the same inputs again). Every input's row is
journalled before the request's slot is released; a request the server
refuses as invalid is sent again input by input, so one bad input fails alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import anyio

from llamabatch.config import RunConfig
from llamabatch.engine.lane import Lane
from llamabatch.engine.workqueue import Workers, WorkQueue
from llamabatch.errors import RequestError
from llamabatch.prompts import Prompt
from llamabatch.prompts.text import embedding_input, estimate_tokens
from llamabatch.results.metrics import embedding_columns
from llamabatch.results.rowbuilder import Job
from llamabatch.wire import Response
from llamabatch.wire.embeddings import EmbeddingResponse
from llamabatch.wire.transport import Transport

# Final errors of a whole request that one of its inputs may have caused.
SPLIT_ON = frozenset({"invalid_request", "context_length"})


class Engine(Protocol):
    """What embedding requests use of the engine: its transport, its attempts, its rows."""

    @property
    def config(self) -> RunConfig: ...

    @property
    def transport(self) -> Transport: ...

    async def _attempts(
        self,
        lane: Lane,
        job: Job,
        scheduled: float | None,
        fresh: Callable[[], Response],
        send: Callable[[Response], Awaitable[RequestError | None]],
        finish: Callable[[Response, RequestError | None], None],
    ) -> Response | None: ...

    def _finish(
        self,
        job: Job,
        resp: Response,
        error: RequestError | None,
        columns: Mapping[str, Any] | None = None,
    ) -> None: ...


async def embed_rows(engine: Engine, lane: Lane, queue: WorkQueue, workers: Workers) -> None:
    """One worker of an embedding lane: batches of rows until the queue is done."""
    config = lane.config
    while (item := await workers.take(queue)) is not None:
        prompt, sample, scheduled, _ = item
        if lane.stopped is not None:
            queue.unschedule()
        budget = config.batch_tokens - _tokens(prompt)
        more = queue.take_more(config.batch_inputs - 1, budget, _tokens)
        await embed(engine, lane, [(prompt, sample), *more], scheduled)
        await anyio.lowlevel.checkpoint()


async def embed(
    engine: Engine, lane: Lane, rows: Sequence[tuple[Prompt, int]], scheduled: float | None
) -> None:
    """Send the rows' inputs as one request; write a row per input."""
    embedder = lane.embedder
    assert embedder is not None
    texts = [_text(prompt) for prompt, _ in rows]
    jobs = [
        Job(lane.config, prompt, sample, lane.params, lane.params_json, estimate_tokens(text))
        for (prompt, sample), text in zip(rows, texts, strict=True)
    ]
    # The request's bookkeeping (waits, attempts, start) is kept once, then copied to each row.
    lead = Job(
        lane.config,
        jobs[0].prompt,
        jobs[0].sample,
        lane.params,
        lane.params_json,
        sum(job.token_estimate for job in jobs),
    )
    request = embedder.build_request(lane.config, texts, lane.params, lane.api_key)
    split = False

    def fresh() -> Response:
        return EmbeddingResponse(len(texts))

    async def send(resp: Response) -> RequestError | None:
        try:
            timeout_s = engine.config.engine.timeout_s
            await engine.transport.send(request, embedder, resp, timeout_s)
        except RequestError as exc:
            return exc
        return None

    def finish(resp: Response, error: RequestError | None) -> None:
        nonlocal split
        if error is not None and len(jobs) > 1 and error.error_type in SPLIT_ON:
            split = not error.stops_model
            if split:
                return  # sent again input by input: the bad one fails alone
        for job in jobs:
            job.queue_s, job.attempts = lead.queue_s, lead.attempts
            job.started_wall, job.scheduled_wall = lead.started_wall, lead.scheduled_wall
        if error is None:
            assert isinstance(resp, EmbeddingResponse)
            weights = [job.token_estimate for job in jobs]
            columns = embedding_columns(resp.vectors, resp.total_tokens, weights)
            for job, row in zip(jobs, columns, strict=True):
                engine._finish(job, resp, None, row)
        else:
            for job in jobs:
                engine._finish(job, resp, error)

    await engine._attempts(lane, lead, scheduled, fresh, send, finish)
    if split:
        for row in rows:
            await embed(engine, lane, [row], None)


def _text(prompt: Prompt) -> str:
    return embedding_input(prompt.extra, prompt.messages)


def _tokens(prompt: Prompt) -> int:
    return estimate_tokens(_text(prompt))
