"""Per-model circuit breaker: stop burning retries on an endpoint that is down.

When `threshold` distinct requests have failed in a row with errors that look
like an outage (connection errors, timeouts, 5xx), the breaker opens: the
model's requests wait instead of being sent. Retries of one request count
once, so a single poisoned prompt cannot open it; final errors (the request
itself was invalid) mean the endpoint answered, and never count. After a
cooldown one probe request goes out; success closes the breaker, failure
reopens it with a longer cooldown. If the endpoint stays down
for `max_open_s`, waiting requests fail fast with the last error, so a dead
endpoint cannot hold a run hostage. Other models are unaffected.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

import anyio

from llamabatch.errors import RequestError

OUTAGE_TYPES = frozenset({"connection", "timeout", "server"})
DEFAULT_THRESHOLD = 8
DEFAULT_COOLDOWN_S = 2.0
DEFAULT_MAX_COOLDOWN_S = 30.0
DEFAULT_MAX_OPEN_S = 300.0


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        max_cooldown_s: float = DEFAULT_MAX_COOLDOWN_S,
        max_open_s: float = DEFAULT_MAX_OPEN_S,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.max_open_s = max_open_s
        self.failing: set[Hashable] = set()  # requests failed since the last answer
        self.opened = 0
        self._open_since: float | None = None
        self._retry_at = 0.0
        self._cooldown_s = cooldown_s
        self._probing = False
        self._changed = anyio.Event()
        self._last_error: RequestError | None = None

    @property
    def is_open(self) -> bool:
        return self._open_since is not None

    async def wait(self) -> bool:
        """Wait while the breaker is open; True when this caller is the probe.

        Raises the last outage error once the endpoint has been down for `max_open_s`.
        """
        while self._open_since is not None:
            now = time.monotonic()
            if now - self._open_since >= self.max_open_s and self._last_error is not None:
                err = self._last_error
                raise RequestError(
                    err.error_type,
                    f"endpoint down for {now - self._open_since:.0f} s (circuit open): "
                    f"{err.message}",
                    http_status=err.http_status,
                )
            if not self._probing and now >= self._retry_at:
                self._probing = True
                return True
            changed = self._changed
            with anyio.move_on_after(max(0.01, self._retry_at - now)):
                await changed.wait()
        return False

    def record(self, error: RequestError | None, key: Hashable, *, probe: bool) -> None:
        """Count one finished attempt of the request `key`."""
        if error is None or error.error_type not in OUTAGE_TYPES or not error.retryable:
            self._close()  # the endpoint answered: it is up
            return
        self._last_error = error
        self.failing.add(key)
        if probe or (self._open_since is None and len(self.failing) >= self.threshold):
            self._open(reopen=probe)

    def _open(self, *, reopen: bool) -> None:
        now = time.monotonic()
        if self._open_since is None:
            self._open_since = now
            self.opened += 1
            self._cooldown_s = self.base_cooldown_s
        elif reopen:
            self._cooldown_s = min(self.max_cooldown_s, self._cooldown_s * 2)
        self._retry_at = now + self._cooldown_s
        self._probing = False
        self._notify()

    def _close(self) -> None:
        self.failing.clear()
        if self._open_since is not None or self._probing:
            self._open_since = None
            self._probing = False
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
