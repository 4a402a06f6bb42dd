"""Chunked bodies the tap decodes itself: any split, extensions, trailers, a pooled connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import anyio
import pytest

from llamabatch.errors import RequestError
from llamabatch.wire import Response, wireclock
from llamabatch.wire.chunked import ChunkedBody, ChunkError
from llamabatch.wire.transport import Transport
from tests.wire.rawhttp import openai_request, read_request

EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    *(
        b'data: {"choices":[{"index":0,"delta":{"content":"t%d "},"finish_reason":null}]}\n\n' % i
        for i in range(5)
    ),
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]
TEXT = "t0 t1 t2 t3 t4 "


def chunked(events: list[bytes], *, ext: bytes = b"", trailer: bytes = b"") -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(e), ext, e) for e in events)
    return body + b"0" + ext + b"\r\n" + trailer + b"\r\n"


def decode(raw: bytes, split: Callable[[bytes], list[bytes]]) -> tuple[bytes, bytes | None]:
    chunks, body, last = ChunkedBody(), b"", None
    for piece in split(raw):
        if last is not None:
            last += piece
            continue
        part, last = chunks.feed(piece)
        body += part
    return body, last


@pytest.mark.parametrize(
    "split",
    [
        lambda raw: [raw],
        lambda raw: [raw[i : i + 1] for i in range(len(raw))],
        lambda raw: [raw[i : i + 7] for i in range(0, len(raw), 7)],
    ],
    ids=["whole", "byte-at-a-time", "7-byte-reads"],
)
@pytest.mark.parametrize(
    ("ext", "trailer"), [(b"", b""), (b";name=value", b"X-Trailer: 1\r\n")], ids=["plain", "ext"]
)
def test_any_split_decodes_the_body_and_hands_over_the_last_chunk(
    split: Callable[[bytes], list[bytes]], ext: bytes, trailer: bytes
) -> None:
    body, last = decode(chunked(EVENTS, ext=ext, trailer=trailer), split)
    assert body == b"".join(EVENTS)
    assert last == b"0" + ext + b"\r\n" + trailer + b"\r\n"


@pytest.mark.parametrize(
    "raw",
    [b"zz\r\ndata\r\n", b"-4\r\ndata\r\n", b"0x4\r\ndata\r\n", b"4\r\ndataXY", b"1_0\r\n"],
)
def test_what_is_not_chunked_coding_is_refused(raw: bytes) -> None:
    with pytest.raises(ChunkError):
        ChunkedBody().feed(raw)


def per_write_server(listener: socket.socket, replies: int, raw: bytes) -> None:
    """One keep-alive connection; each reply's head, then its chunked body a chunk per write.

    A body without its last chunk is cut off: the connection is closed after it.
    """
    conn, _ = listener.accept()
    with conn:
        for _ in range(replies):
            read_request(conn)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            start = 0
            while start < len(raw):  # a size line and what follows it up to the next CRLF
                end = raw.find(b"\r\n", raw.find(b"\r\n", start) + 2)
                end = len(raw) if end < 0 else end + 2
                conn.sendall(raw[start:end])
                start = end
            if not raw.endswith(b"\r\n\r\n"):
                return
        conn.recv(1)


async def send_all(raw: bytes, replies: int) -> tuple[list[Response | RequestError], int]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(
            target=per_write_server, args=(listener, replies, raw), daemon=True
        )
        server.start()
        port = listener.getsockname()[1]
        provider, request = openai_request(port)
        results: list[Response | RequestError] = []
        async with Transport() as transport:
            for _ in range(replies):
                resp = Response(chunk_times=True)
                try:
                    with anyio.fail_after(10):
                        await transport.send(request, provider, resp, 5.0)
                    results.append(resp)
                except RequestError as exc:
                    results.append(exc)
                    break
            opened = max((s.request for s in transport._wire._sockets.values()), default=0)
        server.join(5)
    return results, opened


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("ext", "trailer"), [(b"", b""), (b";name=value", b"X-Trailer: 1\r\n")], ids=["plain", "ext"]
)
async def test_per_write_replies_on_one_kept_alive_connection(ext: bytes, trailer: bytes) -> None:
    results, requests_on_one = await send_all(chunked(EVENTS, ext=ext, trailer=trailer), 3)
    for resp in results:
        assert isinstance(resp, Response)
        assert resp.text == TEXT and resp.done and resp.finish_reason == "stop"
        assert resp.chunks is not None and len(resp.chunks) == 5
        assert resp.started_t < resp.first_token_t <= resp.ended_t  # type: ignore[operator]
    if wireclock.SUPPORTED:
        assert requests_on_one == 3  # the connection was pooled after each reply


@pytest.mark.anyio
async def test_a_bad_chunk_size_mid_stream_is_a_retryable_protocol_error() -> None:
    raw = chunked(EVENTS[:3])[: -len(b"0\r\n\r\n")] + b"zz\r\nnope\r\n0\r\n\r\n"
    results, _ = await send_all(raw, 1)
    (error,) = results
    assert isinstance(error, RequestError)
    assert error.retryable and error.error_type in ("protocol", "connection")


@pytest.mark.anyio
async def test_a_body_cut_off_before_its_last_chunk_is_a_retryable_connection_error() -> None:
    results, _ = await send_all(chunked(EVENTS)[: -len(b"0\r\n\r\n")], 1)
    (error,) = results
    assert isinstance(error, RequestError)
    assert error.retryable and error.error_type == "connection"
