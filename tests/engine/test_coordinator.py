"""The coordinator protocol in memory: two engines' limits served by one LimitHub."""

from __future__ import annotations

import time

import anyio
import pytest

from llamabatch.engine.breaker import CircuitBreaker
from llamabatch.engine.coordinator import (
    QUIET_REPORT_INTERVAL_S,
    REPORT_INTERVAL_S,
    UNSENT_WINDOW_S,
    LimitHub,
    SharedLimits,
)
from llamabatch.engine.ratelimit import Admission
from llamabatch.errors import RequestError

pytestmark = pytest.mark.anyio


def hub(*, rpm: float | None = None, concurrency: int = 8, threshold: int = 4) -> LimitHub:
    admission = Admission(concurrency=concurrency, rpm=rpm, tpm=None)
    return LimitHub([(admission, CircuitBreaker(threshold=threshold, cooldown_s=60.0))])


def engines(coordinator: LimitHub, n: int = 2, concurrency: int = 8) -> list[SharedLimits]:
    # LimitHub.call is the protocol's server side: the hub itself is an in-memory link.
    return [SharedLimits(coordinator, [(concurrency // n, concurrency)]) for _ in range(n)]


async def test_unlimited_models_lease_tickets_in_blocks() -> None:
    coordinator = hub()
    calls = 0
    real_call = coordinator.call

    async def counted(method: str, *args: object) -> object:
        nonlocal calls
        calls += 1
        return await real_call(method, *args)

    coordinator.call = counted  # type: ignore[method-assign]
    a, b = (limits.admissions[0] for limits in engines(coordinator))
    tickets = [await a.wait(10) for _ in range(8)] + [await b.wait(10) for _ in range(8)]
    assert len(set(tickets)) == 16  # one numbering for the whole run
    assert calls == 4  # each engine: a first block of one round (4), then of 4 rounds
    # With no budget to correct, a block is a number: no ticket kept in the coordinator (a
    # per-ticket record of a block cost the parent ~5 us per response and grew unbounded).
    admission = coordinator.admissions[0]
    assert admission.unsent is not None and len(admission.unsent) == 0
    assert not admission._ticket_tokens


async def test_rpm_is_one_bucket_for_all_engines() -> None:
    coordinator = hub(rpm=1200)  # 20 requests/s for the run, not for each engine
    a, b = (limits.admissions[0] for limits in engines(coordinator))
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for admission in (a, b):
            for _ in range(10):
                tg.start_soon(admission.wait, 1.0)
    assert time.monotonic() - started >= 19 / 20 * 0.95  # 20 permits at 20/s, either side


async def test_a_429_seen_by_one_engine_pauses_and_slows_the_other() -> None:
    coordinator = hub()
    first, second = engines(coordinator)
    a, b = first.admissions[0], second.admissions[0]
    await a.wait(1.0)
    await b.wait(1.0)
    a.on_rate_limited(30.0)
    await first.flush()
    assert coordinator.admissions[0].concurrency == 4  # the run's concurrency was halved
    b.on_success(None, 1.0)
    await second.flush()  # any reply carries the model's state back
    assert b.take_now() is None  # paused, though it holds leased tickets
    assert b.paused_until - time.monotonic() > 25
    assert b.rate_limited and b.concurrency == 2  # its half of the run's 4
    with pytest.raises(RequestError, match="pause"):
        b.max_wait_s = 10.0
        await b.wait(1.0)


async def test_outages_seen_by_two_engines_open_one_breaker() -> None:
    coordinator = hub(threshold=4)
    first, second = engines(coordinator)
    down = RequestError("connection", "refused", retryable=True)
    for i in range(2):
        first.breakers[0].record(down, ("a", i), probe=False)
        second.breakers[0].record(down, ("b", i), probe=False)
    await first.flush()
    assert not coordinator.breakers[0].is_open  # 2 distinct failures so far
    await second.flush()
    assert coordinator.breakers[0].is_open  # 4 across the two engines
    first.admissions[0].on_success(None, 1.0)
    await first.flush()
    assert first.breakers[0].is_open
    with anyio.move_on_after(0.2) as scope:
        await first.breakers[0].wait()  # waits for the cooldown, as a local breaker does
    assert scope.cancelled_caught


async def test_a_success_reaches_the_coordinator_only_while_it_counts_failures() -> None:
    coordinator = hub(threshold=4)
    (limits,) = engines(coordinator, n=1)
    breaker = limits.breakers[0]
    breaker.record(None, ("a", 0), probe=False)
    assert not limits.admissions[0].report  # nothing to tell: the common case costs nothing
    breaker.record(RequestError("server", "502", retryable=True), ("a", 1), probe=False)
    await limits.flush()
    assert coordinator.breakers[0].failing
    breaker.record(None, ("a", 2), probe=False)
    await limits.flush()
    assert not coordinator.breakers[0].failing


async def test_tickets_leased_just_before_a_budget_figure_count_as_spent() -> None:
    # Engine A leases 4 tickets; engine B leases the next and its response says 9 are left
    # (the server saw B's request, not A's, which A sends a moment later). Given out again,
    # A's 4 would meet 429s: the coordinator takes them as spent (5 left), unless they were
    # leased well before B's (then the server has seen them).
    budget = {"x-ratelimit-reset-requests": "5s"}
    for pause, left in ((0.0, 5), (UNSENT_WINDOW_S + 0.05, 9)):
        admission = hub().admissions[0]
        first = await admission.wait(1.0)
        admission.observe_headers({**budget, "x-ratelimit-remaining-requests": "10"}, first)
        leased_by_a = [admission.try_take(1.0) for _ in range(4)]
        assert None not in leased_by_a
        await anyio.sleep(pause)
        ticket_of_b = admission.try_take(1.0)
        assert ticket_of_b is not None
        admission.observe_headers({**budget, "x-ratelimit-remaining-requests": "9"}, ticket_of_b)
        granted = 0
        while admission.try_take(1.0) is not None:
            granted += 1
        assert granted == left, pause
        if left == 5:  # the figure may be low: a probe asks soon, not at the 5 s reset
            with anyio.fail_after(1.0):
                await admission.wait(1.0)


@pytest.mark.parametrize(("left", "leases"), [("1000", 1), ("20", 4)])
async def test_a_budget_with_room_is_leased_a_share_at_a_time(left: str, leases: int) -> None:
    # Paced by a server's budget, an engine asks for what waits now (a stock would be sent
    # after the budget moved on), unless the budget has ample room for the whole run
    # (4 x its concurrency of 8): then its share at once, so its requests do not each wait
    # for a lease (the first 600 of a shared RPM run went one lease per request).
    coordinator = hub()
    limits = engines(coordinator)[0]
    admission = limits.admissions[0]
    ticket = await admission.wait(1.0)
    headers = {"x-ratelimit-remaining-requests": left, "x-ratelimit-reset-requests": "5s"}
    admission.observe_headers(headers, ticket)
    await limits.flush()
    calls = 0
    real_call = coordinator.call

    async def counted(method: str, *args: object) -> object:
        nonlocal calls
        calls += method == "lease"
        return await real_call(method, *args)

    coordinator.call = counted  # type: ignore[method-assign]
    for _ in range(4):  # one at a time, as requests that find a free slot
        await admission.wait(1.0)
    assert calls == leases


async def test_routine_outcomes_travel_less_often_while_nothing_limits_the_model() -> None:
    # Every report wakes the coordinator (the run's parent process). Successes of a model
    # nothing limits only feed a rate to learn at a first 429: they can wait longer.
    limits = engines(hub())[0]
    assert limits._interval() == QUIET_REPORT_INTERVAL_S
    limits.admissions[0].on_rate_limited(0.0)
    assert limits._interval() == REPORT_INTERVAL_S
