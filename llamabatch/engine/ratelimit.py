"""Per-model admission: client-side RPM/TPM buckets, server-advertised budgets, AIMD on 429s."""

from __future__ import annotations

import itertools
import math
import re
import time
from collections import deque
from collections.abc import Mapping
from typing import Final

import anyio

from llamabatch.engine.unsent import UnsentTickets
from llamabatch.errors import RequestError

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
RATE_LIMIT_PAUSE_S = 1.0  # lane pause after a 429 that names no Retry-After
DECREASE_COOLDOWN_S = 1.0  # one multiplicative cut per burst of 429s
LEARN_WINDOW_S = 10.0  # successes counted when learning a rate from 429s
LEARN_BACKOFF = 0.9  # pace at this fraction of the rate that succeeded
LEARN_GROWTH = 1.002  # each success raises a learned rate by 0.2 %
PROBE_WAIT_S = 2.0  # after a budget resets, others wait this long for the probe's headers
UNSENT_RECHECK_S = 0.25  # a budget figure lowered for tickets maybe unsent: re-asked this soon


def parse_duration(text: str) -> float | None:
    """Seconds in a rate-limit reset value: `1s`, `6m0s`, `12ms`, `1h2m3.5s` or a bare number.

    A negative value (`-0.002s`: a reset just past when the server wrote it) is 0.
    """
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    if text.startswith("-"):
        return 0.0 if parse_duration(text[1:]) is not None else None
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


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

    def try_acquire(self, amount: float = 1.0) -> bool:
        """Charge `amount` if `acquire` would not wait now (and no one else is waiting)."""
        if self._lock.locked():
            return False
        self._refill()
        if self._level < 1.0 and self._level < amount:
            return False
        self._level -= amount
        return True

    def set_rate(self, rate_per_s: float) -> None:
        self._refill()
        self.rate_per_s = rate_per_s

    def refund(self, amount: float) -> None:
        """Give back an over-estimate (or charge an under-estimate, when negative)."""
        self._refill()
        self._level = min(self.capacity, self._level + amount)


class _Budget:
    """What the server says is left until its window resets (x-ratelimit-* headers)."""

    __slots__ = ("remaining", "reset_at", "seen")

    def __init__(self) -> None:
        self.remaining: float | None = None
        self.reset_at = 0.0
        self.seen = -1

    def update(
        self, remaining: str | None, reset: str | None, now: float, ticket: int, spent_since: float
    ) -> bool:
        """Take the server's figure as of request `ticket`, less what was sent after it."""
        if remaining is None or ticket < self.seen:
            return False  # an older response arriving late says less than we know
        try:
            value = float(remaining)
        except ValueError:
            return False
        seconds = parse_duration(reset) if reset is not None else None
        self.seen = ticket
        self.remaining = value - spent_since
        self.reset_at = now + (seconds if seconds is not None else 1.0)
        return True

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds to wait before `amount` may be spent (0: `spend` it now)."""
        if self.remaining is None or now >= self.reset_at or self.remaining >= amount:
            return 0.0
        return self.reset_at - now

    def spend(self, amount: float, now: float) -> None:
        """Spend `amount`, which `wait_s` allowed at `now`.

        A reset only adds to a budget, so what is known to be left is spent
        first, past the reset too. With nothing known left past the reset, the
        budget is unknown: one request goes out as a probe and its response
        headers say what is left, so a sliding-window limit is not met by
        every waiting worker at once.
        """
        if self.remaining is None:
            return
        if now >= self.reset_at and self.remaining < amount:  # the probe: the others wait
            self.remaining = amount
            self.reset_at = now + PROBE_WAIT_S
        self.remaining -= amount

    def refund(self, amount: float) -> None:
        """Give back what `spend` took for a request that did not go."""
        if self.remaining is not None:
            self.remaining += amount


class NoLimit:
    """Stands in for a limiter that cannot bind, so the hot path skips its bookkeeping."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


NO_LIMIT: Final = NoLimit()


class Admission:
    """Decides when a model may send its next request.

    Client-side `rpm`/`tpm` buckets; the server's `x-ratelimit-remaining-*` /
    `x-ratelimit-reset-*` budgets when it sends them; and AIMD on 429s: each
    burst of 429s halves the model's concurrency and pauses the model for the
    Retry-After, and every success grows it back by 1/limit, up to the
    configured cap. A 429 whose headers say the request budget is spent only
    pauses: the budget paces the model, and halving its concurrency would only
    slow the next window's requests. Time spent here is queue time, never latency.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float | None,
        tpm: float | None,
        max_wait_s: float = math.inf,
    ) -> None:
        self.max_concurrency = concurrency
        self.max_wait_s = max_wait_s
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.rpm = TokenBucket.per_minute(rpm, burst_s=0) if rpm else None
        self.tpm = TokenBucket.per_minute(tpm) if tpm else None
        self.paused_until = 0.0
        self.rate_limited = 0
        self._requests = _Budget()
        self._tokens = _Budget()
        self._growth = 0.0
        self._last_cut = -DECREASE_COOLDOWN_S
        self._changed = anyio.Event()
        self._sent = 0
        self._tokens_sent = 0.0
        self._ticket_tokens: dict[int, float] = {}
        # A coordinator's admission (see engine/coordinator.py) hands tickets to other
        # processes, which send them a little later, out of order: set there.
        self.unsent: UnsentTickets | None = None
        self.learned: TokenBucket | None = None
        self._successes: deque[float] = deque()

    @property
    def concurrency(self) -> int:
        return int(self.limiter.total_tokens)

    @property
    def slot(self) -> anyio.CapacityLimiter | NoLimit:
        """The concurrency limit to hold while a request is in flight.

        A model's workers never exceed its configured concurrency, so until a
        429 lowers it the limiter cannot bind and is skipped.
        """
        return self.limiter if self.rate_limited else NO_LIMIT

    @property
    def requests_left(self) -> float | None:
        """Requests the server's budget is known to have left (None: no figure)."""
        return self._requests.remaining

    @property
    def paced(self) -> bool:
        """Whether any limit paces requests (else only concurrency and pauses bind)."""
        return not (
            self.rpm is None
            and self.tpm is None
            and self.learned is None
            and self._requests.remaining is None
            and self._tokens.remaining is None
        )

    def take_now(self, count: int = 1) -> int | None:
        """The first of `count` tickets at once when nothing limits this model (the common
        case), else None. No budget is known, so there is no figure to correct for them."""
        if (
            self.rpm is None
            and self.tpm is None
            and self.learned is None
            and self._requests.remaining is None
            and self._tokens.remaining is None
            and self.paused_until <= time.monotonic()
        ):
            self._sent += count
            return self._sent - count + 1
        return None

    async def wait(self, tokens: float) -> int:
        """Wait for every limit, charge one request and `tokens`; returns the request's ticket.

        A server that asks for a pause longer than `max_wait_s` (Retry-After,
        x-ratelimit-reset-*) fails the request at once instead of stalling the run.
        """
        await self._unpaused(tokens)
        while not await self._paced(tokens):
            self._requests.refund(1.0)
            self._tokens.refund(tokens)
            await self._unpaused(tokens)  # a 429 paused the model meanwhile: wait it out
        return self._issue(tokens)

    async def _unpaused(self, tokens: float) -> None:
        """Wait out a pause and the server's budgets (see `wait`)."""
        while True:
            now = time.monotonic()
            # Nothing is spent until nothing makes the request wait: a probe spent while a
            # pause holds it back would keep every other request waiting for its headers.
            delay = max(
                self.paused_until - now,
                self._requests.wait_s(1.0, now),
                self._tokens.wait_s(tokens, now),
            )
            if delay <= 0:
                # Reserved now; given back if a pause comes first (see `wait`).
                self._requests.spend(1.0, now)
                self._tokens.spend(tokens, now)
                return
            if delay > self.max_wait_s:
                raise RequestError(
                    "rate_limit",
                    f"the server's rate limit asks for a {delay:.0f} s pause (Retry-After or "
                    f"x-ratelimit-reset), more than max_retry_after_s = {self.max_wait_s:g}",
                )
            changed = self._changed
            with anyio.move_on_after(delay):
                await changed.wait()  # fresh headers may lift the wait early

    async def _paced(self, tokens: float) -> bool:
        """Wait for the client-side buckets; False (their charges given back) when a 429
        paused the model meanwhile: a request queued on a bucket must not go out then."""
        charged = []
        for bucket, amount in ((self.rpm, 1.0), (self.tpm, tokens), (self.learned, 1.0)):
            if bucket is not None:
                await bucket.acquire(amount)
                charged.append((bucket, amount))
        if self.paused_until <= time.monotonic():
            return True
        for bucket, amount in charged:
            bucket.refund(amount)
        return False

    def try_take(self, tokens: float) -> int | None:
        """A ticket now if no limit makes the caller wait (charged as `wait` does), else None."""
        now = time.monotonic()
        if self.paused_until > now:
            return None
        budgets = ((self._requests, 1.0), (self._tokens, tokens))
        for budget, amount in budgets:
            remaining = budget.remaining
            if remaining is not None and remaining < amount:
                return None  # spent, or unknown until a probe's headers say (see `wait`)
        buckets = [b for b in (self.rpm, self.tpm, self.learned) if b is not None]
        amounts = [tokens if b is self.tpm else 1.0 for b in buckets]
        for i, (bucket, amount) in enumerate(zip(buckets, amounts, strict=True)):
            if not bucket.try_acquire(amount):
                for taken, back in zip(buckets[:i], amounts[:i], strict=True):
                    taken.refund(back)
                return None
        for budget, amount in budgets:
            if budget.remaining is not None:
                budget.remaining -= amount
        return self._issue(tokens)

    def _issue(self, tokens: float) -> int:
        """The next ticket, noting what was sent as of it (and when, for unsent tickets)."""
        self._sent += 1
        self._tokens_sent += tokens
        self._ticket_tokens[self._sent] = self._tokens_sent
        if self.unsent is not None:
            self.unsent.issue(self._sent, time.monotonic())
        return self._sent

    def forget_tickets(self, keep: int) -> None:
        """Keep what was sent as of only the newest `keep` tickets whose headers are awaited.

        A coordinator is told only of responses that carried budget headers; an
        older ticket's figure is then taken as the latest one (see `observe_headers`).
        """
        drop = len(self._ticket_tokens) - keep
        if drop > 0:
            for ticket in list(itertools.islice(self._ticket_tokens, drop)):
                del self._ticket_tokens[ticket]
                if self.unsent is not None:
                    self.unsent.drop(ticket)

    def observe_headers(self, headers: Mapping[str, str], ticket: int) -> None:
        """Learn the server's budgets from the response to request `ticket`."""
        now = time.monotonic()
        tokens_then = self._ticket_tokens.pop(ticket, self._tokens_sent)
        # Tickets issued just before `ticket` and not answered yet: another process may
        # send them after this request reached the server, so its figure may not count
        # them yet. Taken as spent, they are not given out twice.
        unsent = 0 if self.unsent is None else self.unsent.close(ticket)
        changed = self._requests.update(
            headers.get("x-ratelimit-remaining-requests"),
            headers.get("x-ratelimit-reset-requests"),
            now,
            ticket,
            self._sent - ticket + unsent,
        )
        if changed and unsent:
            # Taken as spent, they may have been counted already: the figure may be low. If
            # no newer one comes, a probe asks the server soon, not at a far reset.
            budget = self._requests
            budget.reset_at = min(budget.reset_at, now + UNSENT_RECHECK_S)
        changed |= self._tokens.update(
            headers.get("x-ratelimit-remaining-tokens"),
            headers.get("x-ratelimit-reset-tokens"),
            now,
            ticket,
            self._tokens_sent - tokens_then,
        )
        if changed:
            self._changed.set()
            self._changed = anyio.Event()

    def on_rate_limited(self, retry_after_s: float | None) -> None:
        """Multiplicative decrease, and pause the model until the server's Retry-After."""
        now = time.monotonic()
        self.rate_limited += 1
        pause = retry_after_s if retry_after_s is not None else RATE_LIMIT_PAUSE_S
        self.paused_until = max(self.paused_until, now + pause)
        if self._requests.remaining is not None and self._requests.remaining < 1:
            return  # the server's budget headers say it is spent: they pace, not concurrency
        if now - self._last_cut >= DECREASE_COOLDOWN_S:
            self._last_cut = now
            self.limiter.total_tokens = max(1, self.concurrency // 2)
            self._growth = 0.0
            if self._requests.remaining is None:
                self._learn_rate(now)

    def _learn_rate(self, now: float) -> None:
        """With no budget headers to go by, pace at just under the rate that succeeded."""
        while self._successes and now - self._successes[0] > LEARN_WINDOW_S:
            self._successes.popleft()
        if len(self._successes) < 2:
            return
        rate = LEARN_BACKOFF * len(self._successes) / max(1e-3, now - self._successes[0])
        if self.learned is None:
            self.learned = TokenBucket(rate, 1.0)
        else:
            self.learned.set_rate(min(rate, self.learned.rate_per_s))

    def on_success(self, total_tokens: int | None, estimate: float) -> None:
        """Additive increase; correct the TPM charge with the real usage."""
        if self.tpm is not None and total_tokens is not None:
            self.tpm.refund(estimate - total_tokens)
        now = time.monotonic()
        successes = self._successes
        successes.append(now)
        while now - successes[0] > LEARN_WINDOW_S:
            successes.popleft()
        if self.learned is not None:
            self.learned.set_rate(self.learned.rate_per_s * LEARN_GROWTH)
        if self.concurrency < self.max_concurrency:
            self._growth += 1.0 / self.concurrency
            if self._growth >= 1.0:
                self._growth = 0.0
                self.limiter.total_tokens = self.concurrency + 1

    def on_failure(self, estimate: float) -> None:
        """A failed attempt used no tokens worth charging."""
        if self.tpm is not None:
            self.tpm.refund(estimate)
