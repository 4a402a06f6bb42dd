"""Per-model admission: a pause after a 429 holds every request, queued or not."""

from __future__ import annotations

import time

import anyio
import pytest

from llamabatch.engine.ratelimit import Admission

pytestmark = pytest.mark.anyio


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
