"""Per-model admission: a pause after a 429 holds every request, queued or not; the probe
after a budget's reset; a 429 for a spent budget."""

from __future__ import annotations

import time

import anyio
import pytest

from llamabatch.engine.ratelimit import PROBE_WAIT_S, Admission, parse_duration

pytestmark = pytest.mark.anyio
SPENT = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "0.05s"}


@pytest.mark.parametrize("limit", ["rpm", "learned"])
async def test_a_request_queued_on_a_bucket_waits_out_a_pause_set_meanwhile(limit: str) -> None:
    admission = Admission(concurrency=4, rpm=600 if limit == "rpm" else None, tpm=None)
    if limit == "learned":  # the rate learned from 429s when the server sends no budget
        for _ in range(10):
            admission.on_success(None, 1.0)
        admission.on_rate_limited(0.0)
        assert admission.learned is not None
        admission.learned.set_rate(10.0)
    await admission.wait(1.0)  # the bucket's token: the next request waits 0.1 s for one
    sent: list[float] = []

    async def queued() -> None:
        await admission.wait(1.0)
        sent.append(time.monotonic())

    bucket = admission.rpm or admission.learned
    assert bucket is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(queued)
        while not bucket._lock.locked():  # until it waits on the bucket (no timed sleep)
            await anyio.lowlevel.checkpoint()
        admission.on_rate_limited(0.5)  # a 429 (Retry-After: 0.5) meanwhile
        paused_until = admission.paused_until
    assert sent[0] >= paused_until  # sent after the pause, not when the bucket let it go


async def test_a_request_held_by_a_pause_does_not_spend_the_probe() -> None:
    # The budget resets (0.05 s) during a 429's pause (0.3 s). A request arriving in between
    # must not take the probe while it waits for the pause: if it did, it would go at the
    # pause's end with nothing left to spend, waiting PROBE_WAIT_S for headers that no
    # request is sent to fetch (2 s stalls of a sliding-window limit, shared or not).
    admission = Admission(concurrency=8, rpm=None, tpm=None)
    ticket = await admission.wait(1.0)
    admission.observe_headers(SPENT, ticket)
    admission.on_rate_limited(0.3)
    await anyio.sleep(0.1)
    started = time.monotonic()
    with anyio.fail_after(PROBE_WAIT_S):
        await admission.wait(1.0)  # the probe, once the pause is over
    assert 0.15 <= time.monotonic() - started < 1.0
    with anyio.move_on_after(0.3):  # the others wait for the probe's headers
        await admission.wait(1.0)
        pytest.fail("a second request went before the probe's headers came back")


async def test_a_429_for_a_spent_budget_pauses_without_halving_concurrency() -> None:
    # The budget headers pace the model; halving its concurrency would only slow the
    # requests of the budget's next window. A 429 without them still halves it (AIMD).
    for headers, after in ((SPENT, 8), ({}, 4)):
        admission = Admission(concurrency=8, rpm=None, tpm=None)
        ticket = await admission.wait(1.0)
        admission.observe_headers(headers, ticket)
        admission.on_rate_limited(0.2)
        assert admission.concurrency == after, headers
        assert admission.paused_until > time.monotonic() + 0.1  # a pause either way
        assert admission.rate_limited == 1


async def test_a_known_budget_is_spent_past_its_reset_before_a_probe() -> None:
    # A reset only adds to a budget (a sliding window frees a slot, a bucket refills): the
    # 5 requests known to be left go at once past it, where every request used to wait for
    # one probe's headers. Only then is the budget unknown and one probe goes alone.
    admission = Admission(concurrency=8, rpm=None, tpm=None)
    ticket = await admission.wait(1.0)
    budget = {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "0.01s"}
    admission.observe_headers(budget, ticket)
    await anyio.sleep(0.02)  # past the reset
    assert None not in [admission.try_take(1.0) for _ in range(5)]
    assert admission.try_take(1.0) is None  # none known left: not without a probe
    with anyio.fail_after(1.0):
        await admission.wait(1.0)  # the probe
    assert admission.try_take(1.0) is None  # the others wait for its headers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("0.5", 0.5),
        ("-0.000s", 0.0),
        ("-3ms", 0.0),
        ("-1", 0.0),
        ("soon", None),
        ("-", None),
    ],
)
def test_reset_durations(text: str, seconds: float | None) -> None:
    # A reset just past when the server wrote it ("-0.000s") is now, not unknown: taken as
    # unknown it meant a 1 s default wait at every turn of a sliding window.
    assert parse_duration(text) == seconds
