"""The simulator's native paths speak the real formats: the official SDKs can use them."""

from __future__ import annotations

import llama_api_client
import ollama
import pytest

from llamabatch import SimProfile, SimServer
from tests.helpers import FAST

pytestmark = pytest.mark.anyio
MESSAGES = [{"role": "user", "content": "Say something about llamas."}]


async def test_llama_api_client_streams_from_the_sim() -> None:
    async with (
        SimServer(default=FAST) as sim,
        llama_api_client.AsyncLlamaAPIClient(base_url=sim.llama_base_url, api_key="k") as client,
    ):
        stream = await client.chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_completion_tokens=50,
            stream=True,
        )
        text, kinds, metrics, stop = "", [], {}, None
        async for chunk in stream:
            kinds.append(chunk.event.event_type)
            if chunk.event.delta.type == "text":
                text += chunk.event.delta.text
            stop = chunk.event.stop_reason or stop
            metrics.update({m.metric: m.value for m in chunk.event.metrics or []})
    assert kinds[0] == "start" and kinds[-2:] == ["complete", "metrics"]
    assert set(kinds[1:-2]) == {"progress"} and stop == "stop"
    assert metrics["num_completion_tokens"] == len(text.split())


async def test_llama_api_client_whole_reply_models_and_errors() -> None:
    profile = SimProfile(ttft_s=0, tokens_per_s=0, output_tokens=500)
    async with SimServer(default=profile, api_key="right") as sim:
        async with llama_api_client.AsyncLlamaAPIClient(
            base_url=sim.llama_base_url, api_key="right"
        ) as client:
            reply = await client.chat.completions.create(
                model="m",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_completion_tokens=7,
            )
            ids = [m.id for m in await client.models.list()]
        async with llama_api_client.AsyncLlamaAPIClient(
            base_url=sim.llama_base_url, api_key="wrong", max_retries=0
        ) as bad:
            with pytest.raises(llama_api_client.AuthenticationError):
                await bad.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    message = reply.completion_message
    assert message.stop_reason == "length" and "Llama-4-Maverick-17B-128E-Instruct-FP8" in ids
    assert not isinstance(message.content, str) and message.content is not None
    assert len(message.content.text.split()) == 7
    assert {m.metric: m.value for m in reply.metrics or []}["num_completion_tokens"] == 7


async def test_ollama_client_streams_from_the_sim() -> None:
    # Clients are closed inside the test: one left to the garbage collector closes
    # its connections on whatever event loop is running then, or on a closed one.
    async with SimServer(default=FAST) as sim, ollama.AsyncClient(host=sim.root_url) as client:
        parts = [
            part
            async for part in await client.chat(
                model="llama-test", messages=MESSAGES, stream=True, options={"num_predict": 50}
            )
        ]
        whole = await client.chat(model="llama-test", messages=MESSAGES, options={"seed": 1})
        listed = await client.list()
    final = parts[-1]
    text = "".join(p.message.content or "" for p in parts)
    assert final.done and final.done_reason == "stop" and not any(p.done for p in parts[:-1])
    assert final.eval_count == len(text.split()) and final.eval_duration is not None
    assert whole.done and whole.message.content and whole.eval_count
    assert "Llama-4-Scout-17B-16E-Instruct-FP8:latest" in [m.model for m in listed.models]


async def test_ollama_client_sees_errors() -> None:
    async with SimServer(default=FAST) as sim:
        sim.script.append("404")
        with pytest.raises(ollama.ResponseError) as info:
            async with ollama.AsyncClient(host=sim.root_url) as client:
                await client.chat(model="nope", messages=MESSAGES)
    assert info.value.status_code == 404
