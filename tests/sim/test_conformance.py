"""The simulator speaks the real OpenAI wire format: the official SDK can use it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import pytest

from llamabatch import SimProfile, SimServer
from tests.helpers import FAST

pytestmark = pytest.mark.anyio
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Say something about llamas."}]


@asynccontextmanager
async def client(
    sim: SimServer, key: str = "sk-test", **kw: object
) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=key, **kw) as c:  # type: ignore[arg-type]
        yield c


async def test_streaming_with_usage_through_the_sdk() -> None:
    async with SimServer(default=FAST) as sim, client(sim) as c:
        stream = await c.chat.completions.create(
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
    profile = SimProfile(output_tokens=500, ttft_s=0, tokens_per_s=0)
    async with SimServer(default=profile) as sim, client(sim) as c:
        reply = await c.chat.completions.create(model="m", messages=MESSAGES, max_tokens=7)  # type: ignore[arg-type]
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    assert len((reply.choices[0].message.content or "").split()) == 7


async def test_same_prompt_and_seed_give_the_same_text() -> None:
    async with SimServer(default=FAST) as sim, client(sim) as c:
        first = await c.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        again = await c.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        other = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Something else"}]
        )
    text = first.choices[0].message.content
    assert text == again.choices[0].message.content != other.choices[0].message.content


async def test_models_list_and_errors_through_the_sdk() -> None:
    async with SimServer(default=FAST, api_key="sk-right") as sim:
        async with client(sim, "sk-right", max_retries=0) as good:
            ids = [m.id async for m in good.models.list()]
            assert "Llama-4-Maverick-17B-128E-Instruct-FP8" in ids
            sim.script.append("429")
            with pytest.raises(openai.RateLimitError):
                await good.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        async with client(sim, "sk-wrong") as bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]


async def test_n_choices_unique_ids_and_real_created_times_through_the_sdk() -> None:
    async with SimServer(default=FAST) as sim, client(sim) as c:
        first = await c.chat.completions.create(model="m", messages=MESSAGES, n=3)  # type: ignore[arg-type]
        second = await c.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        stream = await c.chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
        texts, ids, usage = ["", ""], set(), None
        async for chunk in stream:
            ids.add(chunk.id)
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
            usage = chunk.usage or usage
    assert [c.index for c in first.choices] == [0, 1, 2]
    replies = [c.message.content or "" for c in first.choices]
    assert len(set(replies)) == 3 and all(replies)
    assert first.usage is not None
    assert first.usage.completion_tokens == sum(len(r.split()) for r in replies)
    assert first.id != second.id and first.id.startswith("chatcmpl-")
    assert abs(first.created - time.time()) < 60
    assert len(ids) == 1 and first.id not in ids  # one id per streamed reply, never reused
    assert all(texts) and texts[0] != texts[1]
    assert usage is not None and usage.completion_tokens == sum(len(t.split()) for t in texts)
