"""When to try a failed request again, and after how long (the wire format says whether)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from llamabatch.config.schema import EngineConfig
from llamabatch.errors import RequestError


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
