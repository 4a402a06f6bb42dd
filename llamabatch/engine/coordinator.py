"""One set of limits for engines in several processes or machines.

A run split over worker processes (or Ray actors) keeps the limits of one
run: a coordinator, `LimitHub`, holds each model's real `Admission` (RPM/TPM
buckets, the server's budget headers, AIMD on 429s, pauses, a learned pace)
and `CircuitBreaker`. Each engine holds `SharedLimits`: per model a
`LeasedAdmission` and a `SharedBreaker` that the engine uses as it would the
local ones. Nothing costs a round trip per request: permits (request
tickets) are leased in blocks (while a limit paces the model, a block is
what the requests waiting at that moment need, so no stock of tickets is
sent after the server's budget has moved on), and outcomes are reported in
batches off the request path; every reply carries the model's state back (pause, adaptive
concurrency, breaker), so a 429 seen by one engine slows all of them.

The protocol, three calls carried by any `HubLink` (a socket to the parent
process, a Ray actor handle; results are plain JSON-able values):

    lease(model, count, tokens)  -> {"tickets": [first, n], "state": ...} | {"error": ...}
    report(model, report)        -> state
    breaker_wait(model)          -> {"probe": bool, "state": ...} | {"error": ...}
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import anyio

from llamabatch.engine.breaker import OUTAGE_TYPES, CircuitBreaker
from llamabatch.engine.ratelimit import NO_LIMIT, RATE_LIMIT_PAUSE_S, Admission, NoLimit
from llamabatch.engine.unsent import UnsentTickets
from llamabatch.errors import RequestError

REPORT_INTERVAL_S = 0.05  # outcomes are batched at most this long (a 429 goes at once)
# ... while no limit paces the model and no 429 was seen: then they feed only the counts
# behind a rate learned at a first 429 (over LEARN_WINDOW_S = 10 s), and every report
# wakes the coordinator (the parent process: ~1/3 of its wakes at 20 calls/s per worker).
QUIET_REPORT_INTERVAL_S = 0.25
LEASE_BLOCKS = 4  # tickets asked per lease: this many times the engine's concurrency
# While a budget paces a model, an engine leases its whole share at once (not just what
# waits now) if the budget has this many times the run's concurrency left.
ROOM_FOR_A_BLOCK = 4
TICKETS_KEPT = 100_000  # per model, tickets whose budget headers may still come back
# A ticket leased this long before another may reach the server after it (sent by another
# engine, or later in its block): the other's budget figure may not count it yet.
UNSENT_WINDOW_S = 0.1
BUDGET_HEADERS = (
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


class HubLink(Protocol):
    """Carries one call to the coordinator and returns its (JSON-able) result."""

    async def call(self, method: str, *args: Any) -> Any: ...


def _error_fields(error: RequestError) -> list[Any]:
    return [error.error_type, error.message, error.http_status, error.retryable]


def _error_from(fields: Sequence[Any]) -> RequestError:
    error_type, message, status, retryable = fields
    return RequestError(error_type, message, http_status=status, retryable=retryable)


class LimitHub:
    """The coordinator: every model's admission and breaker, for all engines of a run."""

    def __init__(self, limits: Sequence[tuple[Admission, CircuitBreaker]]) -> None:
        self.admissions = [a for a, _ in limits]
        self.breakers = [b for _, b in limits]
        for admission in self.admissions:
            admission.unsent = UnsentTickets(UNSENT_WINDOW_S)

    def state(self, model: int) -> dict[str, Any]:
        admission, breaker = self.admissions[model], self.breakers[model]
        return {
            "pause_s": max(0.0, admission.paused_until - time.monotonic()),
            "concurrency": admission.concurrency,
            "limited": admission.rate_limited,
            "open": breaker.is_open,
            "failing": bool(breaker.failing),
            "paced": admission.paced,
            "room": admission.requests_left,
        }

    async def lease(self, model: int, count: int, tokens: float) -> dict[str, Any]:
        """Wait for one ticket, then take up to `count` in all that need no wait."""
        admission = self.admissions[model]
        if (first := admission.take_now(count)) is not None:
            return {"tickets": [first, count], "state": self.state(model)}  # the common case
        try:
            first = await admission.wait(tokens)
        except RequestError as refused:
            return {"error": _error_fields(refused)}
        n = 1
        while n < count and admission.try_take(tokens) is not None:
            n += 1  # no await since `first`: the tickets are consecutive
        return {"tickets": [first, n], "state": self.state(model)}

    def report(self, model: int, report: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a batch of outcomes (see `Report.take`), as the engine's `_observe` would."""
        admission, breaker = self.admissions[model], self.breakers[model]
        for ticket, headers in report.get("headers", ()):
            admission.observe_headers(headers, ticket)
        admission.forget_tickets(TICKETS_KEPT)  # responses without headers are not reported
        for key, probe, fields in report.get("breaker", ()):
            error = None if fields is None else _error_from(fields)
            breaker.record(error, tuple(key), probe=probe)
        for _ in range(report.get("ok", 0)):
            admission.on_success(None, 0.0)
        if admission.tpm is not None:
            admission.tpm.refund(report.get("refund", 0.0))
        for retry_after_s in report.get("limited", ()):
            admission.on_rate_limited(retry_after_s)
        return self.state(model)

    async def breaker_wait(self, model: int) -> dict[str, Any]:
        try:
            probe = await self.breakers[model].wait()
        except RequestError as down:
            return {"error": _error_fields(down)}
        return {"probe": probe, "state": self.state(model)}

    async def call(self, method: str, *args: Any) -> Any:
        """The protocol's calls by name (what a transport's server side dispatches)."""
        if method == "lease":
            return await self.lease(*args)
        if method == "report":
            return self.report(*args)
        if method == "breaker_wait":
            return await self.breaker_wait(*args)
        raise ValueError(f"unknown coordinator call {method!r}")


class Report:
    """Outcomes not yet sent to the coordinator."""

    __slots__ = ("breaker", "headers", "limited", "ok", "refund")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.ok = 0
        self.refund = 0.0
        self.headers: list[list[Any]] = []
        self.limited: list[float | None] = []
        self.breaker: list[list[Any]] = []

    def __bool__(self) -> bool:
        return bool(self.ok or self.refund or self.headers or self.limited or self.breaker)

    def take(self) -> dict[str, Any]:
        """The outcomes as the coordinator's `report` takes them; starts a new batch."""
        taken = {
            "ok": self.ok,
            "refund": self.refund,
            "headers": self.headers,
            "limited": self.limited,
            "breaker": self.breaker,
        }
        self._reset()
        return taken


class SharedLimits:
    """An engine's side of the coordinator: one leased admission and breaker per model."""

    def __init__(
        self,
        link: HubLink,
        concurrency: Sequence[tuple[int, int]],
        *,
        max_wait_s: float = math.inf,
    ) -> None:
        """`concurrency`: per model, (this engine's share, the whole run's)."""
        self.link = link
        self._wake = anyio.Event()
        self._urgent = anyio.Event()
        self.admissions = [
            LeasedAdmission(self, i, share, total, max_wait_s)
            for i, (share, total) in enumerate(concurrency)
        ]
        self.breakers = [SharedBreaker(self, i) for i in range(len(concurrency))]

    def wake(self, *, urgent: bool = False) -> None:
        """Outcomes are waiting; `urgent` ones (a 429, budget headers, the breaker) go now."""
        self._wake.set()
        if urgent:
            self._urgent.set()

    async def run(self) -> None:
        """Send outcomes in batches, for as long as the engine runs (start it in a task group).

        Routine outcomes wait up to REPORT_INTERVAL_S to travel together (while nothing
        limits a model, QUIET_REPORT_INTERVAL_S); an urgent one cuts the wait short, since
        other engines pace themselves by it.
        """
        while True:
            await self._wake.wait()
            self._wake, self._urgent = anyio.Event(), anyio.Event()
            await self.flush()
            with anyio.move_on_after(self._interval()):
                await self._urgent.wait()

    def _interval(self) -> float:
        if any(a.limited_lately for a in self.admissions):
            return REPORT_INTERVAL_S
        return QUIET_REPORT_INTERVAL_S

    async def flush(self) -> None:
        for admission in self.admissions:
            if admission.report:
                state = await self.link.call("report", admission.model, admission.report.take())
                self.apply(admission.model, state)

    def apply(self, model: int, state: Mapping[str, Any]) -> None:
        self.admissions[model].apply(state)
        self.breakers[model].apply(state)


class LeasedAdmission:
    """What the engine needs of an `Admission`, with the permits leased from the coordinator."""

    def __init__(
        self, limits: SharedLimits, model: int, share: int, total: int, max_wait_s: float
    ) -> None:
        self.limits = limits
        self.model = model
        self.max_concurrency = share
        self.total = max(1, total)
        self.fraction = share / self.total
        self.max_wait_s = max_wait_s
        self.limiter = anyio.CapacityLimiter(share)
        self.rate_limited = 0
        self.paused_until = 0.0
        self.report = Report()
        self._next = self._end = 0  # leased tickets not yet used: [_next, _end)
        self._leasing: anyio.Event | None = None
        self._paced = False  # a limit paces this model (RPM/TPM, budgets, a learned rate)
        self._waiting = 0  # requests waiting for a ticket
        self._leased = False
        self._stock_paced = False  # the tickets in hand were leased while a limit paced
        self._room: float | None = None  # requests the server's budget has left, if known

    @property
    def concurrency(self) -> int:
        return int(self.limiter.total_tokens)

    @property
    def slot(self) -> anyio.CapacityLimiter | NoLimit:
        return self.limiter if self.rate_limited else NO_LIMIT

    @property
    def limited_lately(self) -> bool:
        """Whether a limit paces this model or a 429 was seen: its outcomes are news."""
        return self._paced or self.rate_limited > 0

    def take_now(self) -> int | None:
        if self._next < self._end and self.paused_until <= time.monotonic():
            self._next += 1
            return self._next - 1
        return None

    async def wait(self, tokens: float) -> int:
        self._waiting += 1
        try:
            return await self._wait(tokens)
        finally:
            self._waiting -= 1

    async def _wait(self, tokens: float) -> int:
        while True:
            pause = self.paused_until - time.monotonic()
            if pause > self.max_wait_s:
                raise RequestError(
                    "rate_limit",
                    f"the server's rate limit asks for a {pause:.0f} s pause, more than "
                    f"max_retry_after_s = {self.max_wait_s:g}",
                )
            if pause > 0:
                await anyio.sleep(pause)
            elif (ticket := self.take_now()) is not None:
                return ticket
            elif self._leasing is not None:
                await self._leasing.wait()
            else:
                await self._lease(tokens)

    async def _lease(self, tokens: float) -> None:
        self._leasing = leasing = anyio.Event()
        try:
            # Paced by a limit, ask for what the requests waiting now need: a server's budget
            # counts what was sent, and a stock of tickets would be sent later (unless the
            # budget has ample room: then the share, sent within a round trip to the server,
            # and the requests need not each wait for a lease).
            # The first block is one round: until a response says, a server's budget is unknown.
            rounds = LEASE_BLOCKS if self._leased else 1
            block = rounds * self.max_concurrency
            if self._paced:
                ample = self._room is not None and self._room >= ROOM_FOR_A_BLOCK * self.total
                block = max(self._waiting, self.max_concurrency) if ample else self._waiting
            self._leased = True
            got = await self.limits.link.call("lease", self.model, max(1, block), tokens)
        finally:
            self._leasing = None
            leasing.set()
        if "error" in got:
            raise _error_from(got["error"])
        self.limits.apply(self.model, got["state"])
        first, n = got["tickets"]
        self._next, self._end = first, first + n
        self._stock_paced = self._paced

    def apply(self, state: Mapping[str, Any]) -> None:
        """Take the coordinator's view: its pause, its 429 count, this engine's share of its
        adaptive concurrency."""
        if state["pause_s"] > 0:
            self.paused_until = max(self.paused_until, time.monotonic() + state["pause_s"])
        self.rate_limited = max(self.rate_limited, state["limited"])
        self._paced = bool(state["paced"])
        self._room = state.get("room")
        if self._paced and not self._stock_paced:
            self._next = self._end  # a block leased before the pacing: the budget moved on
        share = max(1, min(self.max_concurrency, round(state["concurrency"] * self.fraction)))
        if share != self.limiter.total_tokens:
            self.limiter.total_tokens = share

    def observe_headers(self, headers: Mapping[str, str], ticket: int) -> None:
        budget = {k: v for k in BUDGET_HEADERS if (v := headers.get(k)) is not None}
        if budget:
            self.report.headers.append([ticket, budget])
            if not self._paced:  # the server keeps a budget: tickets in stock predate it
                self._paced = self._stock_paced = True
                self._next = self._end
        self.limits.wake(urgent=bool(budget))

    def on_rate_limited(self, retry_after_s: float | None) -> None:
        self.rate_limited += 1
        pause = retry_after_s if retry_after_s is not None else RATE_LIMIT_PAUSE_S
        self.paused_until = max(self.paused_until, time.monotonic() + pause)
        self.report.limited.append(retry_after_s)
        self.limits.wake(urgent=True)

    def on_success(self, total_tokens: int | None, estimate: float) -> None:
        self.report.ok += 1
        if total_tokens is not None:
            self.report.refund += estimate - total_tokens

    def on_failure(self, estimate: float) -> None:
        self.report.refund += estimate


class SharedBreaker:
    """What the engine needs of a `CircuitBreaker`; the coordinator's breaker decides."""

    def __init__(self, limits: SharedLimits, model: int) -> None:
        self.limits = limits
        self.model = model
        self.is_open = False
        self._failing = False  # the coordinator counts failures: successes must reach it

    async def wait(self) -> bool:
        got = await self.limits.link.call("breaker_wait", self.model)
        if "error" in got:
            raise _error_from(got["error"])
        self.limits.apply(self.model, got["state"])
        return bool(got["probe"])

    def record(self, error: RequestError | None, key: Any, *, probe: bool) -> None:
        if error is not None and (error.error_type not in OUTAGE_TYPES or not error.retryable):
            error = None  # the endpoint answered: to the breaker, a success
        if error is None and not (probe or self._failing or self.is_open):
            return  # the common case: nothing the coordinator's breaker would change
        report = self.limits.admissions[self.model].report
        report.breaker.append([list(key), probe, None if error is None else _error_fields(error)])
        self._failing = error is not None
        self.limits.wake(urgent=True)

    def apply(self, state: Mapping[str, Any]) -> None:
        self.is_open = bool(state["open"])
        self._failing = self._failing or bool(state["failing"])
