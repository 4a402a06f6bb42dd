"""The `[engine]` table: limits, timeouts, retries, arrivals, workers and the part cadence."""

from __future__ import annotations

from typing import Any

from llamabatch.config import runmodes
from llamabatch.config.schema import (
    ARRIVALS,
    DEFAULT_BACKOFF_BASE_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_BATCH_POLL_MAX_S,
    DEFAULT_BATCH_POLL_S,
    DEFAULT_BREAKER_COOLDOWN_S,
    DEFAULT_BREAKER_MAX_OPEN_S,
    DEFAULT_BREAKER_THRESHOLD,
    DEFAULT_CONCURRENCY,
    DEFAULT_GRACE_S,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_AFTER_S,
    DEFAULT_PART_INTERVAL_S,
    DEFAULT_PART_ROWS,
    DEFAULT_TIMEOUT_S,
    MAX_CONCURRENCY,
    EngineConfig,
)
from llamabatch.config.settings import Table


def build_engine(sec: Table) -> EngineConfig:
    """The engine settings of `sec` (the caller reports keys left over)."""
    config = EngineConfig(
        concurrency=concurrency_setting(sec, DEFAULT_CONCURRENCY),
        timeout_s=sec.positive("timeout_s", float, DEFAULT_TIMEOUT_S),
        max_retries=sec.positive("max_retries", int, DEFAULT_MAX_RETRIES, zero=True),
        backoff_base_s=sec.positive("backoff_base_s", float, DEFAULT_BACKOFF_BASE_S, zero=True),
        backoff_max_s=sec.positive("backoff_max_s", float, DEFAULT_BACKOFF_MAX_S, zero=True),
        max_retry_after_s=sec.positive(
            "max_retry_after_s", float, DEFAULT_MAX_RETRY_AFTER_S, zero=True
        ),
        grace_s=sec.positive("grace_s", float, DEFAULT_GRACE_S, zero=True),
        max_response_bytes=sec.positive("max_response_bytes", int, DEFAULT_MAX_RESPONSE_BYTES),
        breaker_threshold=sec.positive("breaker_threshold", int, DEFAULT_BREAKER_THRESHOLD),
        breaker_cooldown_s=sec.positive(
            "breaker_cooldown_s", float, DEFAULT_BREAKER_COOLDOWN_S, zero=True
        ),
        breaker_max_open_s=sec.positive(
            "breaker_max_open_s", float, DEFAULT_BREAKER_MAX_OPEN_S, zero=True
        ),
        request_rate=sec.positive("request_rate", float),
        arrival=sec.get("arrival", str, "poisson"),
        arrival_seed=sec.get("arrival_seed", int, 0),
        batch_poll_s=sec.positive("batch_poll_s", float, DEFAULT_BATCH_POLL_S),
        batch_poll_max_s=sec.positive("batch_poll_max_s", float, DEFAULT_BATCH_POLL_MAX_S),
        workers=runmodes.parse_workers(sec.get("workers", (int, str), 1), sec.error),
        part_interval_s=sec.positive("part_interval_s", float, DEFAULT_PART_INTERVAL_S),
        part_rows=sec.positive("part_rows", int, DEFAULT_PART_ROWS),
    )
    if config.arrival not in ARRIVALS:
        raise sec.error("arrival", f"must be one of {', '.join(ARRIVALS)}, got {config.arrival!r}")
    return config


def concurrency_setting(sec: Table, default: Any) -> Any:
    """`concurrency` (of `[engine]` or of a model), within the most any run may hold open."""
    value = sec.positive("concurrency", int, default)
    if value is not None and value > MAX_CONCURRENCY:
        raise sec.error("concurrency", f"must be at most {MAX_CONCURRENCY:,}, got {value:,}")
    return value
