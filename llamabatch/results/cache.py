"""The response cache: successful answers kept in SQLite (WAL), keyed by exactly what was asked.

A key hashes the endpoint, the model id, the sample index and the canonical
request body (keys sorted; `stream` and `stream_options` left out, since they
change how an answer travels, not what it is — so online and batch runs share
entries). Headers never take part, so no API key reaches a key or a value.
A value is the answer's columns of the row (text, tokens, the original
timings); the row's identity (run, prompt, times of this run) is never stored.

Several runs may share one cache file: SQLite in WAL mode lets them read while
one writes, and a writer waits for another's commit (busy timeout) instead of
failing. Lookups are synchronous (call them from a worker thread); `put` only
queues, and `flush` (in a worker thread, periodically and at the end) writes
the queue in one transaction.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.results.schema import COLUMNS
from llamabatch.wire import HttpRequest

BUSY_TIMEOUT_S: Final = 60.0
TRANSPORT_ONLY: Final = ("stream", "stream_options")
# Columns that describe this run's row rather than the answer: never cached.
_NOT_CACHED: Final = frozenset(
    {
        "run_id",
        "model",
        "provider",
        "model_id",
        "prompt_id",
        "prompt_hash",
        "sample",
        "turn",
        "status",
        "error_type",
        "error_message",
        "attempts",
        "queue_s",
        "started_at",
        "finished_at",
        "scheduled_at",
        "request_params",
        "expected",
        "batch_id",
        "cached",
    }
)
CACHED_COLUMNS: Final = tuple(c for c in COLUMNS if c not in _NOT_CACHED)
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS responses "
    "(key TEXT PRIMARY KEY, value BLOB NOT NULL, stored_at REAL NOT NULL) WITHOUT ROWID"
)


def endpoint_label(model: ModelConfig) -> str:
    """What identifies a model's endpoint across runs, as configured (before servers start).

    A simulator or local server started by the run gets a new port each time;
    its settings stand for it instead.
    """
    if model.base_url is not None:
        return model.base_url
    local = {"provider": model.provider, "sim": model.sim, "server": str(model.server)}
    return "local:" + orjson.dumps(local, option=orjson.OPT_SORT_KEYS).decode()


def request_key(endpoint: str, body: bytes, model_id: str, sample: int) -> str:
    """The cache key of one request: endpoint, model, sample and the canonical body."""
    data = orjson.loads(body)
    for name in TRANSPORT_ONLY:
        data.pop(name, None)
    digest = hashlib.sha256()
    for part in (endpoint, model_id, str(sample)):
        digest.update(part.encode() + b"\0")
    digest.update(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


class ResponseCache:
    """One cache file, shared safely between runs; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        ttl_s: float | None = None,
        refresh: bool = False,
        endpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self.refresh = refresh
        self.endpoints = dict(endpoints or {})  # model name -> endpoint_label
        self.hits = 0
        self.stored = 0
        self._queue: list[tuple[str, bytes, float]] = []
        self._queue_lock = threading.Lock()  # held only for a list swap: `put` never waits
        self._db_lock = threading.Lock()  # one connection, used from worker threads
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    @classmethod
    def for_run(cls, config: RunConfig) -> ResponseCache | None:
        """The cache `config` asks for, or None (blocking: opens the file)."""
        if config.cache is None:
            return None
        return cls(
            config.cache.path,
            ttl_s=config.cache.ttl_s,
            refresh=config.cache.refresh,
            endpoints={m.name: endpoint_label(m) for m in config.models},
        )

    def key(self, model: ModelConfig, request: HttpRequest, sample: int) -> str:
        """The key of `request` (built for `model`, whose base URL may be a started server's)."""
        path = request.url[len(model.base_url or "") :]
        endpoint = self.endpoints.get(model.name, model.base_url or "") + path
        return request_key(endpoint, request.body, model.model, sample)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer's columns, or None (absent, expired, or refreshing); blocking."""
        if self.refresh:
            return None
        with self._db_lock:
            found = self._db.execute(
                "SELECT value, stored_at FROM responses WHERE key = ?", (key,)
            ).fetchone()
        if found is None or (self.ttl_s is not None and time.time() - found[1] > self.ttl_s):
            return None
        self.hits += 1
        stored: dict[str, Any] = orjson.loads(found[0])
        return stored

    def put(self, key: str, row: Mapping[str, Any]) -> None:
        """Queue a successful row's answer for the next `flush` (cheap; never blocks)."""
        value = orjson.dumps({c: row.get(c) for c in CACHED_COLUMNS})
        with self._queue_lock:
            self._queue.append((key, value, time.time()))

    def flush(self) -> None:
        """Write what was queued in one transaction (blocking: call from a worker thread)."""
        with self._queue_lock:
            queued, self._queue = self._queue, []
        if not queued:
            return
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", queued)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.stored += len(queued)

    def close(self) -> None:
        self.flush()
        with self._db_lock:
            self._db.close()
