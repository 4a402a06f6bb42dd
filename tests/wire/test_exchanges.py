"""A request's times stay its own on a kept-alive connection; closing never leaks the watcher."""

from __future__ import annotations

import socket
import threading
from typing import Any

import anyio
import pytest

from llamabatch import SimServer
from llamabatch.config import ModelConfig
from llamabatch.wire import Response, wireclock
from llamabatch.wire import transport as transport_module
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.transport import Transport
from tests.helpers import FAST
from tests.wire.rawhttp import read_request

pytestmark = pytest.mark.skipif(not wireclock.SUPPORTED, reason="kernel receive stamps are Linux")

BODY = b'{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}]}'
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


def two_replies_server(listener: socket.socket) -> None:
    """One keep-alive connection, two whole JSON replies, each as soon as its request is in."""
    conn, _ = listener.accept()
    with conn:
        for _ in range(2):
            read_request(conn)
            conn.sendall(HEAD % len(BODY) + BODY)
        conn.recv(1)


@pytest.mark.anyio
async def test_the_next_request_on_a_pooled_connection_does_not_move_the_last_ones_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A's whole body is read, so aiohttp pools the connection before A's task resumes;
    # B takes it, writes and gets its reply read first. A's end was the socket's latest
    # read: B's reply, after B had even started.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=two_replies_server, args=(listener,), daemon=True)
        server.start()
        port = listener.getsockname()[1]
        model = ModelConfig(
            name="m",
            provider="openai",
            model="m",
            base_url=f"http://127.0.0.1:{port}/v1",
            stream=False,
        )
        provider = OpenAIProvider()
        request = provider.build_request(model, [{"role": "user", "content": "hi"}], {}, None)
        a_read, b_done = anyio.Event(), anyio.Event()
        read_body = transport_module._read_body

        async def a_late(*args: Any) -> bytes:
            body = await read_body(*args)
            if not a_read.is_set():  # A's: the connection is back in the pool
                a_read.set()
                await b_done.wait()
            return body

        monkeypatch.setattr(transport_module, "_read_body", a_late)
        resp_a, resp_b = Response(), Response()

        async def send_b(transport: Transport) -> None:
            await a_read.wait()
            await transport.send(request, provider, resp_b, 5.0)
            b_done.set()

        async with Transport() as transport:
            async with anyio.create_task_group() as tg:
                with anyio.fail_after(10):
                    tg.start_soon(send_b, transport)
                    await transport.send(request, provider, resp_a, 5.0)
            (sock,) = transport._wire._sockets.values()
            assert sock.request == 2  # one connection served both
        server.join(5)
    assert resp_a.text == resp_b.text == "hi"
    assert resp_b.first_byte_t is not None
    # Before: A's end was B's reply (or A's late resume), on or after B's first byte.
    assert resp_a.started_t < resp_a.ended_t < resp_b.first_byte_t <= resp_b.ended_t


@pytest.mark.anyio
async def test_the_watcher_stops_when_closing_the_connections_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_close() -> None:
        raise OSError("close failed")

    provider = OpenAIProvider()
    async with SimServer(default=FAST) as sim:
        model = ModelConfig(name="m", provider="openai", model="m", base_url=sim.base_url)
        request = provider.build_request(model, [{"role": "user", "content": "hi"}], {}, None)
        with pytest.raises(OSError, match="close failed"):
            async with Transport() as transport:
                resp = Response()
                await transport.send(request, provider, resp, 5.0)  # streamed: watched
                assert resp.done
                assert any(t.name == "llamabatch-arrivals" for t in threading.enumerate())
                session = transport._session
                assert session is not None
                monkeypatch.setattr(session, "close", broken_close)
        monkeypatch.undo()
        await session.close()
    assert not any(t.name == "llamabatch-arrivals" for t in threading.enumerate())
