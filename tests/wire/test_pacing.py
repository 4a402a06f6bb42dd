"""Streams past their first answer token are read at most every PACE_S; their times stay exact."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from llamabatch.wire import Response, bodytap, wireclock
from llamabatch.wire.transport import Transport
from tests.wire.rawhttp import chunk, openai_request, read_request

pytestmark = pytest.mark.skipif(not wireclock.SUPPORTED, reason="kernel receive stamps are Linux")

TOKENS, GAP_S = 40, 0.002  # a token every 2 ms: several per PACE_S
NEAR_S = 0.02  # as the other wire-timing tests: a loaded machine's scheduling
PERIOD_S = 0.05


def token_server(listener: socket.socket, sent: list[float], gap_s: float = GAP_S) -> None:
    """The head and a role event, then a token every `gap_s`, each in its own chunked write."""
    conn, _ = listener.accept()
    with conn:
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + chunk(b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n')
        )
        for i in range(TOKENS):
            time.sleep(gap_s)
            text = b'{"choices":[{"index":0,"delta":{"content":"t%d "}}]}' % i
            conn.sendall(chunk(b"data: " + text + b"\n\n"))
            sent.append(time.perf_counter())
        stop = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        conn.sendall(chunk(stop + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        sent.append(time.perf_counter())
        conn.recv(1)


async def stream(
    chunk_times: bool,
    monkeypatch: pytest.MonkeyPatch,
    gap_s: float = GAP_S,
    pacer: bodytap.Pacer | None = None,
) -> tuple[Response, list[float], int]:
    reads = [0]
    received = bodytap.BodyTap._chunk_received

    def counted(self: Any, data: bytes) -> None:
        reads[0] += 1
        received(self, data)

    monkeypatch.setattr(bodytap.BodyTap, "_chunk_received", counted)
    sent: list[float] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=token_server, args=(listener, sent, gap_s), daemon=True)
        server.start()
        port = listener.getsockname()[1]
        provider, request = openai_request(port)
        resp = Response(chunk_times=chunk_times)
        async with Transport() as transport:
            transport._pacer = pacer or transport._pacer
            await transport.send(request, provider, resp, 10.0)
        server.join(5)
    return resp, sent, reads[0]


@pytest.mark.anyio
async def test_a_paced_stream_is_read_a_few_times_with_exact_ttft_and_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A long period: a token every 2 ms is a fast stream however loaded the machine is.
    pacer = bodytap.Pacer(PERIOD_S)
    resp, sent, reads = await stream(False, monkeypatch, pacer=pacer)
    assert resp.text == "".join(f"t{i} " for i in range(TOKENS)) and resp.done
    # Once paced, at most a read per period (the head and the first token read as they came).
    assert reads <= 3 + (sent[-1] - sent[0]) / PERIOD_S
    assert resp.first_token_t is not None and resp.last_token_t is not None
    assert abs(resp.first_token_t - sent[0]) < NEAR_S
    assert abs(resp.ended_t - sent[-1]) < NEAR_S
    # The last token may share a read with what followed it, at most PACE_S later.
    assert sent[-2] - NEAR_S < resp.last_token_t < sent[-2] + PERIOD_S + NEAR_S


@pytest.mark.anyio
async def test_with_raw_chunk_times_every_write_is_read_and_timed_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resp, sent, reads = await stream(True, monkeypatch)
    assert resp.done and resp.chunks is not None and len(resp.chunks) == TOKENS
    times = [t for t, _ in resp.chunks]
    assert times == sorted(times) and resp.ended_t >= times[-1]
    assert abs(times[0] - sent[0]) < NEAR_S
    # Each token's own time, as it came: paced reads would share times.
    assert reads > TOKENS // 2 and len(set(times)) > TOKENS // 2


@pytest.mark.anyio
async def test_a_stream_slower_than_the_pace_is_never_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses = [0]
    pause = bodytap.Pacer.pause

    def counted(self: Any, transport: Any) -> None:
        pauses[0] += 1
        pause(self, transport)

    monkeypatch.setattr(bodytap.Pacer, "pause", counted)
    resp, _, _ = await stream(False, monkeypatch, gap_s=bodytap.PACE_S * 3)
    assert resp.done and resp.token_chunks == TOKENS
    assert pauses[0] == 0  # two syscalls a read would save nothing at this pace
