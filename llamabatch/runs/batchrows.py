"""Batch mode's rows: finished batches' result files turned into the same rows as online runs.

Result files hold one line per request in any order, so they are indexed by
custom_id (file offsets, not lines) and read back while the prompt set streams
past once for all the batches ready together: memory holds the index, not the
answers. A row gets the batch's id and times; its timing columns stay null (a
batch measures no latency). Rows are written before the chunk is logged
`collected`: a kill in between collects again, and rows already stored are
skipped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import anyio
import orjson

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.errors import RequestError
from llamabatch.prompts import Prompt, PromptSet
from llamabatch.requestspec import merge_params
from llamabatch.results import DoneIndex, Job, RowBuilder, Sink
from llamabatch.results.batchlog import BatchLog, Chunk
from llamabatch.results.cache import ResponseCache
from llamabatch.results.schema import TIMING_COLUMNS
from llamabatch.wire import Response, provider_for
from llamabatch.wire.batches import BatchEndpoints, BatchInfo, apply_result, custom_id

_NO_TIMINGS = dict.fromkeys(TIMING_COLUMNS)
_MISSING = {
    "expired": ("timeout", "batch {id} expired before this request ran; run again to resend it"),
    "cancelled": ("cancelled", "batch {id} was cancelled before this request ran"),
    "failed": ("invalid_request", "batch {id} failed: {why}"),
}


def model_params(
    config: RunConfig, model: ModelConfig, prompt_params: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The request parameters of a model (and a prompt's own), and their JSON for the row."""
    params = merge_params(config.defaults, model.params, prompt_params or {})
    return params, orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()


class Driver(Protocol):
    """What the collector uses of the batch driver (`runs/batch.py`)."""

    config: RunConfig
    prompts: PromptSet
    done: DoneIndex
    sink: Sink
    rows: RowBuilder
    observer: Any
    cache: ResponseCache | None
    log: BatchLog
    models: dict[str, ModelConfig]

    def endpoints(self, model: ModelConfig) -> BatchEndpoints: ...

    async def call(self, request: Any, **kwargs: Any) -> bytes: ...


class Collector:
    """Writes a batch driver's rows: from result files, from the cache, or for a failed chunk."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.started = time.time()
        self._files: dict[Path, BinaryIO] = {}

    def job(self, model: ModelConfig, prompt: Prompt, sample: int, params_json: str) -> Job:
        return Job(model, prompt, sample, {}, params_json, 0)

    def write(self, row: dict[str, Any], cache_key: str | None) -> None:
        """Make a row durable, tell the observer, keep a fresh answer in the cache."""
        self.driver.sink.write(row)
        self.driver.observer.on_row(row)
        if cache_key is not None and row["status"] == "ok" and self.driver.cache is not None:
            self.driver.cache.put(cache_key, row)

    async def fail(self, chunk: Chunk, error: RequestError, *, forget: bool = True) -> None:
        """A chunk whose file could not be uploaded or batch not created: its rows fail.

        With `forget=False` the chunk stays in flight in the log (a batch may exist).
        """
        info = BatchInfo(id="", status="failed")
        await self._rows({chunk.name: (chunk, info, {}, error)}, forget=forget)

    async def collect(self, ready: list[tuple[Chunk, BatchInfo]]) -> None:
        """Download the result files of finished batches and store their rows."""
        entries = {}
        for chunk, info in ready:
            index: dict[str, tuple[Path, int]] = {}
            for file_id, kind in ((info.output_file_id, "output"), (info.error_file_id, "errors")):
                if file_id is None:
                    continue
                path = self.driver.log.path(chunk.name, kind)
                endpoints = self.driver.endpoints(self.driver.models[chunk.model])
                await self.driver.call(endpoints.content(file_id), download=path)
                index.update(await anyio.to_thread.run_sync(_index, path))
            entries[chunk.name] = (chunk, info, index, None)
        await self._rows(entries)

    async def _rows(
        self, entries: dict[str, tuple[Chunk, BatchInfo, Any, Any]], *, forget: bool = True
    ) -> None:
        """Store these chunks' rows in one pass over the prompt set, then log them collected."""
        log = self.driver.log
        keys: dict[str, str] = {}  # custom_id -> chunk
        for name, (chunk, *_) in entries.items():
            ids = await anyio.to_thread.run_sync(_ids, log, chunk)
            keys.update(dict.fromkeys(ids, name))
        models = sorted({chunk.model for chunk, *_ in entries.values()})
        batches = self.driver.prompts.batches()
        try:
            while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
                rows = await anyio.to_thread.run_sync(self._build, batch, models, keys, entries)
                for row, cache_key in rows:
                    self.write(row, cache_key)
        finally:
            for fh in self._files.values():
                fh.close()
            self._files.clear()
        for chunk, info, _, _ in entries.values() if forget else ():
            await anyio.to_thread.run_sync(_forget, log, chunk, info)

    def _build(
        self,
        prompts: list[Prompt],
        models: list[str],
        keys: dict[str, str],
        entries: dict[str, Any],
    ) -> list[tuple[dict[str, Any], str | None]]:
        """The rows of this prompt batch's keys that the chunks cover (blocking)."""
        driver = self.driver
        built = []
        for model_name in models:
            model = driver.models[model_name]
            pending = driver.done.pending(model_name, prompts, driver.config.repeats)
            for prompt, sample, _ in pending:
                name = keys.get(custom_id(model_name, prompt.id, sample))
                if name is not None:
                    built.append(self._row(model, prompt, sample, entries[name]))
        return built

    def _row(
        self, model: ModelConfig, prompt: Prompt, sample: int, entry: tuple[Any, ...]
    ) -> tuple[dict[str, Any], str | None]:
        _, info, index, error = entry
        provider = provider_for(model.provider)
        resp = Response()
        found = index.get(custom_id(model.name, prompt.id, sample))
        if error is None and found is not None:
            _, error = apply_result(self._line(*found), provider, resp)
        elif error is None:
            kind, text = _MISSING.get(
                info.status, ("protocol", "batch {id} ended without a result for this request")
            )
            error = RequestError(
                kind, text.format(id=info.id, why=info.errors or "no reason given")
            )
        params, params_json = model_params(self.driver.config, model, prompt.params)
        job = self.job(model, prompt, sample, params_json)
        job.attempts = 1
        job.started_wall = info.created_at or time.time()
        row = self.driver.rows.build(job, resp, error)
        row.update(_NO_TIMINGS, batch_id=info.id or None)
        # Not before this run started: a stored row of the same key is older, whatever
        # second the provider rounded the batch's end to (the newest row is kept).
        ended = max(info.finished_at or time.time(), self.started)
        row["finished_at"] = int(ended * 1e6)
        cache = self.driver.cache
        key = None
        if cache is not None and error is None:
            request = provider.build_request(model, prompt.messages, params, None)
            key = cache.key(model, request, sample)
        return row, key

    def _line(self, path: Path, offset: int) -> bytes:
        fh = self._files.get(path)
        if fh is None:
            fh = self._files[path] = path.open("rb")
        fh.seek(offset)
        return fh.readline()


def _ids(log: BatchLog, chunk: Chunk) -> list[str]:
    return list(log.custom_ids(chunk))


def _index(path: Path) -> dict[str, tuple[Path, int]]:
    """custom_id -> (file, offset) of every line of a result file (blocking)."""
    index = {}
    offset = 0
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                index[orjson.loads(line)["custom_id"]] = (path, offset)
            offset += len(line)
    return index


def _forget(log: BatchLog, chunk: Chunk, info: BatchInfo) -> None:
    """Log a chunk collected, then drop its files (blocking)."""
    log.record("collected", chunk.name, batch_id=info.id or None)
    for kind in ("", "output", "errors"):
        log.path(chunk.name, kind).unlink(missing_ok=True)
