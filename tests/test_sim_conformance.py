"""The simulator speaks the real OpenAI wire format: the official SDK can use it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from llamabatch import SimProfile, SimServer
from tests.helpers import FAST

pytestmark = pytest.mark.anyio
MESSAGES = [{"role": "user", "content": "Say something about llamas."}]


_OPEN: list[openai.AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    # An SDK client left to the garbage collector closes its pool in a later test's loop.
    yield
    while _OPEN:
        await _OPEN.pop().close()


def client(sim: SimServer, api_key: str = "sk-test", **kwargs: object) -> openai.AsyncOpenAI:
    made = openai.AsyncOpenAI(base_url=sim.base_url, api_key=api_key, **kwargs)  # type: ignore[arg-type]
    _OPEN.append(made)
    return made


async def test_streaming_with_usage_through_the_sdk() -> None:
    async with SimServer(default=FAST) as sim:
        stream = await client(sim).chat.completions.create(
            model="any-model",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=50,
        )
        text, usage, finish = "", None, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
    assert text and finish == "stop"
    assert usage is not None and usage.completion_tokens == len(text.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_non_streaming_and_length_limit_through_the_sdk() -> None:
    async with SimServer(default=SimProfile(output_tokens=500, ttft_s=0, tokens_per_s=0)) as sim:
        reply = await client(sim).chat.completions.create(
            model="m",
            messages=MESSAGES,
            max_tokens=7,  # type: ignore[arg-type]
        )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    assert len((reply.choices[0].message.content or "").split()) == 7


async def test_same_prompt_and_seed_give_the_same_text() -> None:
    async with SimServer(default=FAST) as sim:
        c = client(sim)
        texts = [
            (await c.chat.completions.create(model="m", messages=MESSAGES))
            .choices[0]
            .message.content  # type: ignore[arg-type]
            for _ in range(2)
        ]
        other = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Something else"}]
        )
    assert texts[0] == texts[1] != other.choices[0].message.content


async def test_models_list_and_errors_through_the_sdk() -> None:
    async with SimServer(default=FAST, api_key="sk-right") as sim:
        good = client(sim, api_key="sk-right")
        ids = [m.id async for m in good.models.list()]
        assert "maverick" in ids
        with pytest.raises(openai.AuthenticationError):
            await client(sim).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        sim.script.append("429")
        with pytest.raises(openai.RateLimitError):
            await client(sim, api_key="sk-right", max_retries=0).chat.completions.create(
                model="m", messages=MESSAGES
            )  # type: ignore[arg-type]
