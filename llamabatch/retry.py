"""When to try a failed request again, and after how long."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from llamabatch.config import EngineConfig
from llamabatch.errors import RequestError

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """408, 409, 429 and every 5xx are worth another try; other statuses are final."""
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, deferring to the server's Retry-After."""

    max_retries: int
    base_s: float
    max_s: float
    max_retry_after_s: float

    @classmethod
    def from_config(cls, engine: EngineConfig) -> RetryPolicy:
        return cls(
            max_retries=engine.max_retries,
            base_s=engine.backoff_base_s,
            max_s=engine.backoff_max_s,
            max_retry_after_s=engine.max_retry_after_s,
        )

    def delay(self, attempt: int, error: RequestError, rng: random.Random) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if not error.retryable or attempt > self.max_retries:
            return None
        if error.retry_after_s is not None:
            if error.retry_after_s > self.max_retry_after_s:
                return None
            return error.retry_after_s
        return rng.uniform(0.0, min(self.max_s, self.base_s * 2 ** (attempt - 1)))
