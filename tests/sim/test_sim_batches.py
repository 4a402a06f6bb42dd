"""The simulator's Batch API, driven by the official `openai` SDK's files and batches clients."""

from __future__ import annotations

import json

import openai
import pytest

from llamabatch import SimServer
from tests.helpers import FAST

pytestmark = pytest.mark.anyio


def _requests(n: int) -> bytes:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "m",
                "messages": [{"role": "user", "content": f"Q{i}?"}],
                "max_tokens": 9,
            },
        }
        for i in range(n)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


async def test_the_openai_sdk_uploads_creates_polls_and_downloads() -> None:
    # The client is closed here: left to the garbage collector, it closes its connections
    # on whatever event loop runs then (a later test's, or a closed one).
    async with (
        SimServer(default=FAST) as sim,
        openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client,
    ):
        uploaded = await client.files.create(file=("in.jsonl", _requests(3)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "validating" and batch.input_file_id == uploaded.id
        done = await client.batches.retrieve(batch.id)
        assert done.status == "completed" and done.request_counts is not None
        assert done.request_counts.completed == 3 and done.output_file_id is not None
        content = await client.files.content(done.output_file_id)
        lines = [json.loads(line) for line in content.text.splitlines()]
        listed = [b.id async for b in client.batches.list()]
        online = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Q1?"}], max_tokens=9
        )
    assert listed == [batch.id] and sim.batches.submitted == {"r0": 1, "r1": 1, "r2": 1}
    by_id = {line["custom_id"]: line for line in lines}
    answer = by_id["r1"]["response"]
    assert answer["status_code"] == 200
    # The same reply as the online endpoint gives the same request.
    assert answer["body"]["choices"][0]["message"]["content"] == online.choices[0].message.content
    assert answer["body"]["usage"]["completion_tokens"] == online.usage.completion_tokens  # type: ignore[union-attr]


async def test_states_failures_expiry_cancel_and_failing_polls() -> None:
    # The client is closed here: left to the garbage collector, it closes its connections
    # on whatever event loop runs then (a later test's, or a closed one).
    async with (
        SimServer(default=FAST) as sim,
        openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client,
    ):
        sim.batches.timing.in_progress_s = 3600
        file = await client.files.create(file=("a.jsonl", _requests(4)), purpose="batch")
        slow = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert (await client.batches.retrieve(slow.id)).status == "in_progress"
        cancelled = await client.batches.cancel(slow.id)
        assert cancelled.status == "cancelled"
        sim.batches.timing.in_progress_s = 0
        sim.batches.timing.expire = True
        expired = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        info = await client.batches.retrieve(expired.id)
        assert info.status == "expired" and info.error_file_id is not None
        errors = (await client.files.content(info.error_file_id)).text.splitlines()
        assert [json.loads(e)["error"]["code"] for e in errors] == ["batch_expired"] * 2
        sim.batches.timing.poll_error_every = 2
        await client.batches.retrieve(expired.id)
        with pytest.raises(openai.InternalServerError):
            await client.batches.retrieve(expired.id)
