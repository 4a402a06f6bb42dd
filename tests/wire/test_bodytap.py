"""A streamed body read with one wake: events timed by the read that completed them,
and the task woken early for an error event, the size cap and the deadline."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import pytest

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire import Response
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.transport import Transport
from tests.wire.rawhttp import read_request

PROVIDER = OpenAIProvider()
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
GAP_S = 0.15


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def event(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


END = chunked(event(finish="stop") + b"data: [DONE]\n\n") + b"0\r\n\r\n"


@contextmanager
def raw_server(script: Callable[[socket.socket], None]) -> Iterator[str]:
    """One connection: read the request, then `script` writes whatever it likes."""

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            read_request(conn)
            script(conn)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        thread.join(10)


def send(base_url: str, *, timeout_s: float = 10.0, max_bytes: int | None = None) -> Response:
    model = ModelConfig(name="m", provider="openai", model="m", base_url=base_url)
    request = PROVIDER.build_request(model, [{"role": "user", "content": "hi"}], {}, None)
    resp = Response(chunk_times=True)

    async def main() -> None:
        kw = {} if max_bytes is None else {"max_response_bytes": max_bytes}
        async with Transport(**kw) as transport:
            await transport.send(request, PROVIDER, resp, timeout_s)

    anyio.run(main)
    return resp


def test_events_are_timed_by_the_read_that_completed_them() -> None:
    first, second = event("a"), event("b")

    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + chunked(first[:20]))  # half an event: completes nothing
        time.sleep(GAP_S)
        conn.sendall(chunked(first[20:] + second))  # completes both
        time.sleep(GAP_S)
        conn.sendall(chunked(event("c")))
        time.sleep(GAP_S)
        conn.sendall(END)

    with raw_server(script) as url:
        resp = send(url)
    assert resp.text == "abc" and resp.first_byte_t is not None and resp.chunks is not None
    times = [t - resp.first_byte_t for t, _ in resp.chunks]
    assert times[0] == times[1]  # one read completed both
    assert GAP_S * 0.9 <= times[0] < times[2] - GAP_S * 0.5
    assert times[2] <= resp.ended_t - resp.first_byte_t
    assert resp.first_token_t is not None and resp.first_token_t - resp.first_byte_t == times[0]


def test_an_error_event_ends_the_response_while_the_server_holds_the_stream_open() -> None:
    error = b'data: {"error": {"message": "model overloaded", "type": "server_error"}}\n\n'

    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + chunked(event("a")))
        conn.sendall(chunked(error))
        time.sleep(3)  # no end of stream: only the error event can end the wait

    with raw_server(script) as url:
        started = time.perf_counter()
        with pytest.raises(RequestError, match="overloaded"):
            send(url)
        assert time.perf_counter() - started < 2.5


def test_a_token_that_reads_error_does_not_end_the_stream() -> None:
    # `{"content": "error"}` holds the bytes `"error"`: the stream is parsed early, then goes on.
    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + chunked(event("an ")))
        conn.sendall(chunked(event("error")[:30]))  # the error key split across two reads
        time.sleep(0.05)
        conn.sendall(chunked(event("error")[30:]))
        time.sleep(0.05)
        conn.sendall(chunked(event(" then more")) + END)

    with raw_server(script) as url:
        resp = send(url)
    assert resp.text == "an error then more" and resp.done and resp.token_chunks == 3


def test_many_small_events_do_not_stall_the_stream() -> None:
    body = b"".join(chunked(event("x")) for _ in range(20_000))

    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + body + END)

    with raw_server(script) as url:
        resp = send(url)
    assert resp.text == "x" * 20_000 and resp.done


def test_the_size_cap_ends_a_stream_the_server_holds_open() -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + chunked(event("y" * 20_000)))
        time.sleep(3)

    with raw_server(script) as url:
        started = time.perf_counter()
        with pytest.raises(RequestError) as info:
            send(url, max_bytes=10_000)
        assert time.perf_counter() - started < 2.5
    assert info.value.error_type == "response_too_large"


def test_the_size_cap_holds_for_a_body_that_came_whole_with_its_head() -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + chunked(event("y" * 20_000)) + END)

    with raw_server(script) as url, pytest.raises(RequestError) as info:
        send(url, max_bytes=10_000)
    assert info.value.error_type == "response_too_large"


def test_a_trickling_stream_times_out_at_the_deadline() -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD)
        with_gaps = chunked(event("z"))
        with contextlib.suppress(OSError):  # the client hangs up at its deadline
            for byte in range(len(with_gaps)):
                conn.sendall(with_gaps[byte : byte + 1])
                time.sleep(0.1)

    started = time.perf_counter()
    with raw_server(script) as url, pytest.raises(RequestError) as info:
        send(url, timeout_s=0.5)
    assert info.value.error_type == "timeout"
    assert 0.45 <= time.perf_counter() - started < 2.5


def test_a_connection_broken_mid_stream_is_a_retryable_connection_error() -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + chunked(event("a")))
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    with raw_server(script) as url, pytest.raises(RequestError) as info:
        send(url)
    assert info.value.error_type in ("connection", "protocol") and info.value.retryable


def test_uvloop_reads_the_same_events_timed_when_the_tap_saw_them() -> None:
    pytest.importorskip("uvloop")
    first = event("a")

    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + chunked(first))
        time.sleep(GAP_S)
        conn.sendall(chunked(event("b")) + END)

    model_resp: list[Response] = []

    async def main(url: str) -> None:
        model = ModelConfig(name="m", provider="openai", model="m", base_url=url)
        request = PROVIDER.build_request(model, [{"role": "user", "content": "hi"}], {}, None)
        resp = Response(chunk_times=True)
        async with Transport() as transport:
            await transport.send(request, PROVIDER, resp, 10.0)
        model_resp.append(resp)

    with raw_server(script) as url:
        anyio.run(main, url, backend_options={"use_uvloop": True})
    resp = model_resp[0]
    assert resp.text == "ab" and resp.done and resp.chunks is not None
    assert resp.chunks[1][0] - resp.chunks[0][0] >= GAP_S * 0.9


CONTEXT_ERROR = (
    b'data: {"error": {"message": "context length exceeded", "type": "invalid_request_error",'
    b' "code": "context_length_exceeded"}}\n\n'
)


@pytest.mark.parametrize("framing", ["chunked", "content-length", "close"])
def test_an_error_event_in_the_read_that_ends_the_stream_is_the_servers_error(
    framing: str,
) -> None:
    # vLLM, OpenAI and llama.cpp send the error event and end the stream at once: the
    # error and the end of the body arrive in one read (aiohttp is at EOF before we parse).
    first = event("a")

    def script(conn: socket.socket) -> None:
        if framing == "chunked":
            conn.sendall(HEAD + chunked(first))
            time.sleep(0.1)
            conn.sendall(chunked(CONTEXT_ERROR) + b"0\r\n\r\n")
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        if framing == "content-length":
            head += f"Content-Length: {len(first) + len(CONTEXT_ERROR)}\r\n".encode()
        else:
            head += b"Connection: close\r\n"
        conn.sendall(head + b"\r\n" + first)
        time.sleep(0.1)
        conn.sendall(CONTEXT_ERROR)

    with raw_server(script) as url, pytest.raises(RequestError) as info:
        send(url)
    assert info.value.error_type == "context_length", info.value
    assert "context length exceeded" in str(info.value) and not info.value.retryable


def test_the_size_cap_holds_on_the_read_that_ends_the_stream() -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD + chunked(event("a")))
        time.sleep(0.1)
        conn.sendall(chunked(event("y" * 20_000)) + END)

    with raw_server(script) as url, pytest.raises(RequestError) as info:
        send(url, max_bytes=10_000)
    assert info.value.error_type == "response_too_large"
