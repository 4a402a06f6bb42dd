"""Client-side rate limits: token buckets for requests and tokens per minute."""

from __future__ import annotations

import time

import anyio


class TokenBucket:
    """Refills at `rate_per_s` up to `capacity`; a charge may overdraw, later callers wait.

    Overdrawing lets a request bigger than the bucket through (a 4k-token
    request under a small TPM budget) while keeping the long-run rate exact.
    Waiters are served in arrival order.
    """

    def __init__(self, rate_per_s: float, capacity: float) -> None:
        assert rate_per_s > 0 and capacity > 0
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._level = capacity
        self._stamp = time.monotonic()
        self._lock = anyio.Lock()

    @classmethod
    def per_minute(cls, per_minute: float, *, burst_s: float = 1.0) -> TokenBucket:
        """A bucket for an RPM/TPM limit that allows `burst_s` seconds' worth at once."""
        rate = per_minute / 60.0
        return cls(rate, max(1.0, rate * burst_s))

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until the bucket is not in debt, then charge `amount`."""
        async with self._lock:
            self._refill()
            if self._level < 1.0 and self._level < amount:
                await anyio.sleep((min(amount, 1.0) - self._level) / self.rate_per_s)
                self._refill()
            self._level -= amount

    def refund(self, amount: float) -> None:
        """Give back an over-estimate (or charge an under-estimate, when negative)."""
        self._refill()
        self._level = min(self.capacity, self._level + amount)
