"""The HTTP transport against canned servers that send exactly the bytes a test gives."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from llamabatch import arun
from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire import Response
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.transport import Transport
from tests.helpers import sim_config

pytestmark = pytest.mark.anyio
PROVIDER = OpenAIProvider()


def sse_chunk(content: str | None = None, finish: str | None = None) -> dict[str, object]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def sse(*events: object, eol: str = "\n") -> bytes:
    out = ""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        out += f"data: {data}{eol}{eol}"
    return out.encode()


@asynccontextmanager
async def canned(chunks: Sequence[bytes], *, status: int = 200) -> AsyncIterator[str]:
    """A server answering every POST with `status` and `chunks`, one write each."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def send(base_url: str) -> Response:
    model = ModelConfig(name="m", provider="openai", model="m", base_url=base_url)
    request = PROVIDER.build_request(model, [{"role": "user", "content": "hi"}], {}, None)
    resp = Response()
    async with Transport() as transport:
        await transport.send(request, PROVIDER, resp, 5.0)
    return resp


async def test_any_2xx_is_success() -> None:
    async with canned(
        [sse(sse_chunk("hi"), sse_chunk(finish="stop"), "[DONE]")], status=201
    ) as url:
        resp = await send(url)
    assert resp.text == "hi" and resp.http_status == 201


async def test_byte_at_a_time_cr_only_stream() -> None:
    body = sse(
        sse_chunk(""),
        sse_chunk("Hello"),
        sse_chunk(", world"),
        sse_chunk(finish="stop"),
        "[DONE]",
        eol="\r",
    )
    async with canned([body[i : i + 1] for i in range(len(body))]) as url:
        resp = await send(url)
    assert resp.text == "Hello, world" and resp.done and resp.token_chunks == 2


async def test_single_event_over_256_kb() -> None:
    big = "x" * 700_000
    body = sse(sse_chunk(big), sse_chunk(finish="stop"))
    async with canned([body[i : i + 65536] for i in range(0, len(body), 65536)]) as url:
        resp = await send(url)
    assert resp.text == big and resp.finish_reason == "stop"


async def test_stream_closed_before_terminal_marker_is_truncated() -> None:
    async with canned([sse(sse_chunk("partial"))]) as url:
        with pytest.raises(RequestError) as info:
            await send(url)
    assert info.value.error_type == "protocol" and info.value.retryable
    assert "truncated" in info.value.message


async def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RequestError) as info:
        await send(f"http://127.0.0.1:{port}/v1")
    assert info.value.error_type == "connection" and info.value.retryable


async def test_missing_usage_is_estimated(tmp_path: Path) -> None:
    body = sse(
        sse_chunk("one two three four five six seven eight"), sse_chunk(finish="stop"), "[DONE]"
    )
    async with canned([body]) as url:
        result = await arun(sim_config(tmp_path, url, n_prompts=1))
    (row,) = result.dataframe().to_dict("records")
    assert row["status"] == "ok" and row["usage_source"] == "estimated"
    assert row["completion_tokens"] == 10 and row["prompt_tokens"] > 0


async def test_valid_json_of_the_wrong_shape_is_a_protocol_error() -> None:
    body = sse({"choices": ["not an object"]}, {"choices": [{"delta": 3}]}, "[DONE]")
    async with canned([body]) as url:
        with pytest.raises(RequestError) as info:
            await send(url)
    assert info.value.error_type == "protocol"


async def test_done_in_the_middle_of_a_batch() -> None:
    body = sse(sse_chunk("a"), sse_chunk(finish="stop"), "[DONE]") + b'data: {"error": "late"}\n\n'
    async with canned([body]) as url:
        with pytest.raises(RequestError, match="late"):
            await send(url)


async def test_a_bug_outside_the_parsing_is_not_taken_for_a_server_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(resp: Response) -> bool:
        raise TypeError("a bug of ours")

    monkeypatch.setattr(PROVIDER, "is_complete", broken)
    async with canned([sse(sse_chunk("hi"), sse_chunk(finish="stop"), "[DONE]")]) as url:
        with pytest.raises(TypeError, match="a bug of ours"):
            await send(url)


async def test_a_refused_connection_stops_the_model() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RequestError) as info:
        await send(f"http://127.0.0.1:{port}/v1")
    assert info.value.stops_model and info.value.message.startswith("connection refused")
