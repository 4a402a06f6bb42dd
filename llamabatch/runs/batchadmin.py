"""`llamabatch batches RESULTS [--cancel]`: a run's batches from its log, and cancelling them."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from llamabatch.config import ModelConfig
from llamabatch.config.schema import REDACTED
from llamabatch.errors import ConfigError, RequestError, UsageError
from llamabatch.results import read_manifest
from llamabatch.results.batchlog import BatchLog, Chunk
from llamabatch.results.dirlock import DirectoryLock
from llamabatch.wire import Transport
from llamabatch.wire.batches import BatchEndpoints, BatchInfo, json_object
from llamabatch.wire.status import status_error

CANCEL_TIMEOUT_S = 60.0


def batch_rows(output: Path) -> list[dict[str, Any]]:
    """One row per chunk of the run's batch log: model, batch, requests, state, counts."""
    log = _log(output)
    return [
        {
            "chunk": c.name,
            "model": c.model,
            "batch_id": c.batch_id or "-",
            "requests": c.requests,
            "state": "collected" if c.collected else (c.status or _stage(c)),
            "completed": c.counts.get("completed", 0),
            "failed": c.counts.get("failed", 0),
        }
        for c in log.chunks.values()
    ]


def _stage(chunk: Chunk) -> str:
    if chunk.batch_id:
        return "submitted"
    return "creating" if chunk.creating else ("uploaded" if chunk.file_id else "prepared")


def _log(output: Path) -> BatchLog:
    log = BatchLog(output)
    if not log.chunks:
        raise UsageError(f'{output}: no batches (was it run with --batch or mode = "batch"?)')
    return log


async def cancel_batches(output: Path) -> list[tuple[str, str]]:
    """Cancel every batch of the run still in flight; (chunk, outcome) for each.

    It writes to the batch log, so it is a writer like a run: refused while one holds
    the directory (a run polling its batches would not see the log change under it).
    """
    _log(output)  # not a batch run's directory: refused before a lock file is left there
    with DirectoryLock(output, "batches --cancel"):
        log = _log(output)  # as it is now that no run can change it
        models = _models(output)
        outcomes = []
        async with Transport() as transport:
            for chunk in log.pending():
                if chunk.batch_id is None:
                    continue
                outcome = await _cancel(transport, models.get(chunk.model), chunk.batch_id)
                if outcome in ("cancelling", "cancelled"):
                    record = functools.partial(log.record, status=outcome, counts=chunk.counts)
                    await anyio.to_thread.run_sync(record, "status", chunk.name)
                outcomes.append((chunk.name, outcome))
    return outcomes


async def _cancel(transport: Transport, model: ModelConfig | None, batch_id: str) -> str:
    if model is None or model.base_url is None:
        return "not cancelled: its endpoint (a server the run started) is gone with the run"
    try:
        endpoints = BatchEndpoints(model, model.resolve_api_key())
        status, headers, body = await transport.call(endpoints.cancel(batch_id), CANCEL_TIMEOUT_S)
        if not 200 <= status < 300:
            raise status_error(status, headers, body)
        return BatchInfo.from_json(json_object(body, "batch cancel")).status
    except (RequestError, ConfigError) as exc:
        return f"not cancelled: {exc}"


def _models(output: Path) -> Mapping[str, ModelConfig]:
    """The run's models as its manifest recorded them (secret headers were never stored)."""
    snapshot = (read_manifest(output) or {}).get("config") or {}
    models = {}
    for m in snapshot.get("models") or []:
        headers = {k: v for k, v in (m.get("headers") or {}).items() if v != REDACTED}
        models[m["name"]] = ModelConfig(
            name=m["name"],
            provider=m["provider"],
            model=m["model"],
            base_url=m.get("base_url"),
            api_key_env=m.get("api_key_env"),
            headers=headers,
        )
    return models
