"""Times taken where bytes cross the wire, not where the event loop gets round to them."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from llamabatch import SimServer, arun
from llamabatch.wire import Response, wireclock
from llamabatch.wire import transport as transport_module
from llamabatch.wire.transport import Transport
from tests.helpers import FAST, sim_config
from tests.wire.rawhttp import chunk, openai_request, read_request

pytestmark = pytest.mark.skipif(not wireclock.SUPPORTED, reason="kernel receive stamps are Linux")

FIRST_TOKEN_AFTER_S = 0.05
LOOP_BLOCKED_S = 0.5


def slow_stream_server(listener: socket.socket, opened: threading.Event) -> None:
    """Headers at once, the first token 50 ms later, the end 50 ms after that (HTTP chunked)."""
    conn, _ = listener.accept()
    with conn:
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + chunk(b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n')
        )
        opened.set()
        time.sleep(FIRST_TOKEN_AFTER_S)
        conn.sendall(chunk(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'))
        time.sleep(FIRST_TOKEN_AFTER_S)
        stop = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        conn.sendall(chunk(stop + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        conn.recv(1)


@pytest.mark.anyio
async def test_ttft_and_latency_are_when_bytes_arrived_even_if_the_loop_was_busy() -> None:
    opened = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=slow_stream_server, args=(listener, opened), daemon=True)
        server.start()
        port = listener.getsockname()[1]
        provider, request = openai_request(port)
        resp = Response()

        async def block_the_loop() -> None:
            while not opened.is_set():
                await anyio.sleep(0.002)
            time.sleep(LOOP_BLOCKED_S)  # the whole answer arrives while nothing can read it

        async with Transport() as transport, anyio.create_task_group() as tg:
            tg.start_soon(block_the_loop)
            await transport.send(request, provider, resp, 5.0)
        server.join(5)

    assert resp.text_parts == ["hi"]
    assert resp.first_token_t is not None
    ttft = resp.first_token_t - resp.started_t
    latency = resp.ended_t - resp.started_t
    # Stamped when read, both would be about LOOP_BLOCKED_S.
    assert FIRST_TOKEN_AFTER_S <= ttft <= latency < LOOP_BLOCKED_S / 2


def test_each_request_starts_at_its_first_write_after_a_reply() -> None:
    clock = wireclock.WireClock()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        client = clock.socket(socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0])
        client.connect(address)
        peer, _ = listener.accept()
        with client, peer:
            stamped = clock.socket_of(_FakeTransport(client))
            assert stamped is client
            before = time.perf_counter()
            client.send(b"POST / HTTP/1.1\r\n")
            first = stamped.sent_t
            client.send(b"body")  # the same request: its start stays put
            assert before <= first == stamped.sent_t
            peer.sendall(b"reply")
            assert client.recv(100) == b"reply"
            arrived = stamped.arrival()
            assert first <= arrived <= time.perf_counter()
            client.send(b"POST / HTTP/1.1\r\n")  # the next request on the connection
            assert stamped.sent_t > arrived


class _FakeTransport:
    """What `socket_of` uses of an asyncio transport: its socket, by file descriptor."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def get_extra_info(self, name: str) -> socket.socket:
        assert name == "socket"
        return self._sock


GAP_S = 0.06
TOKENS = 5


def spaced_chunks_server(
    listener: socket.socket, opened: threading.Event, sent: list[float]
) -> None:
    """The head with an opening event, then one token every 60 ms, then the end."""
    conn, _ = listener.accept()
    with conn:
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + chunk(b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n')
        )
        sent.append(time.perf_counter())
        opened.set()
        for i in range(TOKENS):
            time.sleep(GAP_S)
            text = b'{"choices":[{"index":0,"delta":{"content":"t%d "}}]}' % i
            conn.sendall(chunk(b"data: " + text + b"\n\n"))
            sent.append(time.perf_counter())
        stop = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        conn.sendall(chunk(stop + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        conn.recv(1)


@pytest.mark.anyio
async def test_the_first_token_is_timed_by_its_own_arrival_when_later_ones_queued_behind_it() -> (
    None
):
    # The kernel stamps a read with the arrival of the last packet it copied: a late
    # loop reading all queued chunks at once would time the first token by the last one.
    opened = threading.Event()
    sent: list[float] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(
            target=spaced_chunks_server, args=(listener, opened, sent), daemon=True
        )
        server.start()
        port = listener.getsockname()[1]
        provider, request = openai_request(port)
        resp = Response(chunk_times=True)

        async def block_the_loop() -> None:
            while not opened.is_set():
                await anyio.sleep(0.001)
            end = time.perf_counter() + GAP_S * (TOKENS + 2)
            while time.perf_counter() < end:  # busy in Python: every chunk queues up unread
                pass

        async with Transport() as transport, anyio.create_task_group() as tg:
            tg.start_soon(block_the_loop)
            await transport.send(request, provider, resp, 5.0)
        server.join(5)

    assert resp.text == "".join(f"t{i} " for i in range(TOKENS))
    assert resp.first_byte_t is not None and resp.first_token_t is not None
    assert abs(resp.first_byte_t - sent[0]) < GAP_S / 3  # the head: not a token's time
    # The first token's own arrival, not a later chunk's (each 60 ms later).
    assert abs(resp.first_token_t - sent[1]) < GAP_S / 3


def whole_replies_server(listener: socket.socket, replies: int) -> None:
    """One keep-alive connection: each reply's head and whole body in one write."""
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
    conn, _ = listener.accept()
    with conn:
        for _ in range(replies):
            read_request(conn)
            conn.sendall(head % len(body) + body)
        conn.recv(1)


@pytest.mark.anyio
async def test_a_connection_reused_after_a_body_that_came_whole_with_its_head_reads_again() -> None:
    # A streamed reply's socket holds its reads after the head until the body's reader is
    # in place; a body that came whole with the head has no reader, and the next request
    # on the pooled connection must not find the socket still holding.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=whole_replies_server, args=(listener, 3), daemon=True)
        server.start()
        port = listener.getsockname()[1]
        provider, request = openai_request(port)
        switch = sys.getswitchinterval()
        async with Transport() as transport:
            for _ in range(3):
                resp = Response()
                await transport.send(request, provider, resp, 3.0)
                assert resp.text == "hi" and resp.first_byte_t is not None
            assert any(t.name == "llamabatch-arrivals" for t in threading.enumerate())
            # The switch interval is the host's: only processes llamabatch owns shorten it.
            assert sys.getswitchinterval() == switch
        server.join(5)
    assert not any(t.name == "llamabatch-arrivals" for t in threading.enumerate())
    assert sys.getswitchinterval() == switch


def second_reply_waits_server(listener: socket.socket, go: threading.Event) -> None:
    """One keep-alive connection: the first reply whole at once, the second after `go`."""
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
    conn, _ = listener.accept()
    with conn:
        for reply in range(2):
            read_request(conn)
            if reply:
                go.wait(10)
            conn.sendall(head % len(body) + body)
        conn.recv(1)


@pytest.mark.anyio
async def test_a_request_that_ends_leaves_the_watch_of_the_next_request_on_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A's body comes whole with its head, so aiohttp pools the connection at once; B takes
    # it and writes (and so watches it) before A's task gets round to its end. A's cleanup
    # must not stop B's watch: B's first token is still to come.
    go = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=second_reply_waits_server, args=(listener, go))
        server.daemon = True
        server.start()
        port = listener.getsockname()[1]
        provider, request = openai_request(port)
        a_reads, b_wrote = anyio.Event(), anyio.Event()
        read_stream = transport_module.read_stream

        async def a_late(*args: Any) -> None:
            if not a_reads.is_set():  # A's: wait until B has written on the pooled connection
                a_reads.set()
                await b_wrote.wait()
            await read_stream(*args)

        monkeypatch.setattr(transport_module, "read_stream", a_late)
        resp_a, resp_b, a_done = Response(), Response(), anyio.Event()

        async def send_a(transport: Transport) -> None:
            await transport.send(request, provider, resp_a, 5.0)
            a_done.set()  # its `finally` has run

        async with Transport() as transport, anyio.create_task_group() as tg:
            with anyio.fail_after(10):
                tg.start_soon(send_a, transport)
                await a_reads.wait()
                (sock,) = transport._wire._sockets.values()
                a_sent = sock.sent_t
                tg.start_soon(transport.send, request, provider, resp_b, 5.0)
                while sock.sent_t == a_sent:  # B's first write on the one connection
                    await anyio.sleep(0.002)
                b_wrote.set()
                await a_done.wait()
                assert resp_a.text == "hi"
                assert sock.watched  # B's watch: its reply has not come yet
                go.set()
        assert resp_b.text == "hi" and not sock.watched
        server.join(5)


def test_a_thread_held_between_the_two_clock_reads_does_not_move_converted_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stamp converted twice gets one time, though a conversion's thread was held 30 ms.

    Each conversion read both clocks; a GIL switch to the arrival watcher (or a
    preemption) between the reads put everything it converted that much later:
    a first token after its response's end (ttft_s > latency_s under load).
    """
    stamp = wireclock._TIMESPEC.pack(*divmod(time.time_ns() - 5_000_000, 1_000_000_000))
    first = wireclock.perf_times([stamp])[0]
    real_ns, held = time.time_ns, [True]

    def time_ns_then_held() -> int:
        ns = real_ns()
        if held.pop() if held else False:
            time.sleep(0.03)  # the thread switched out before the perf_counter read
        return ns

    monkeypatch.setattr(
        wireclock, "REFERENCE_S", 0.0, raising=False
    )  # every conversion reads the clocks anew
    monkeypatch.setattr(time, "time_ns", time_ns_then_held)
    again = wireclock.perf_times([stamp])[0]
    assert not held  # the hold happened in that conversion
    assert abs(again - first) < 0.005, f"moved by {(again - first) * 1e3:.1f} ms"


@pytest.mark.anyio
@pytest.mark.parametrize("every", [2, 3])
async def test_rows_keep_head_first_token_and_end_in_order_when_clock_reads_are_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: int
) -> None:
    """ttfb_s <= ttft_s <= ttfa_s <= latency_s, chunk times in order within the latency.

    Every 2nd (3rd) read of the realtime clock is held 20 ms before the
    perf_counter read, as a loaded machine may do: before the fix, Ollama rows
    had ttft_s 22 ms with latency_s 2 ms (the failure seen once under load).
    """
    real_ns, calls = time.time_ns, [0]

    def time_ns_sometimes_held() -> int:
        ns = real_ns()
        calls[0] += 1
        if calls[0] % every == 0:
            time.sleep(0.02)
        return ns

    monkeypatch.setattr(time, "time_ns", time_ns_sometimes_held)
    async with SimServer(default=FAST) as sim:
        config = sim_config(
            tmp_path,
            sim.root_url,
            n_prompts=4,
            model_settings={"provider": "ollama"},
            run={"chunk_times": True},
        )
        result = await arun(config)
    df = result.dataframe()
    assert result.exit_code == 0 and (df["status"] == "ok").all()
    assert (df["ttfb_s"] <= df["ttft_s"]).all() and (df["ttft_s"] <= df["ttfa_s"]).all()
    assert (df["ttft_s"] <= df["latency_s"]).all(), df[["ttft_s", "latency_s"]]
    for times, latency in zip(df["chunk_times_s"], df["latency_s"], strict=True):
        assert list(times) == sorted(times) and times[0] > 0 and times[-1] <= latency + 1e-6
