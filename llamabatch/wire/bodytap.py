"""Read a streamed body with one wake of the task, not one per read.

aiohttp wakes the reading task for every read of the socket. Servers write
one SSE event per token, so that is a task step, a timer context and an
iterator round trip per token: most of a lean client's CPU. Here the task
waits once, for the end of the body, while a tap between the transport and
aiohttp's protocol notes per read how many body bytes had arrived and when
(the kernel's receive stamp, see wireclock). The body is framed and parsed
once at the end, each event timed by the read that completed it, so TTFT,
chunk times and inter-token times are what a wake per read would give, or
closer (a read is timed when it reached the machine, not when a task woke).

A chunked body (what servers streaming SSE send) is decoded by the tap
itself when it knows where aiohttp's parser stopped (the reply's first read
was held, see wireclock, and ended at a chunk boundary): the body then never
goes through aiohttp's per-chunk Python calls, and only the last chunk is
passed on, so aiohttp still ends the message and pools the connection.

The task wakes early only when it must: an `"error"` in a read (what came so
far is parsed, and an error event ends the response), the max_response_bytes
cap, a broken connection, or the deadline.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from operator import add
from typing import Any

import aiohttp

from llamabatch.errors import RequestError
from llamabatch.wire.chunked import ChunkedBody, ChunkError
from llamabatch.wire.provider import Decoder, ResponseFormat
from llamabatch.wire.response import Response
from llamabatch.wire.wireclock import perf_times

# Exceptions a wire format's parser raises on valid JSON of an unexpected shape.
SHAPE_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ValueError)
PACE_S = 0.01  # past its first answer token, a stream is read at most this often (Pacer)
DRAIN_BYTES = 64 * 1024  # taken from aiohttp's buffer at this size, before it pauses reading
_ERROR_KEY = b'"error"'
_EDGE = len(_ERROR_KEY) - 1  # a read's last bytes, for an error key split across two reads


async def read_stream(
    r: aiohttp.ClientResponse,
    provider: ResponseFormat,
    resp: Response,
    stamped: Any,
    limit: int,
    deadline: float,
    pacer: Pacer | None = None,
) -> None:
    """Read a streamed body to its end, filling `resp` (events timed by their arrival).

    `stamped`: the connection's stamped socket (wireclock), or None (times are
    then when the tap saw each read); `deadline`: `time.perf_counter` time;
    `pacer`: spaces the reads of a stream whose first answer token is known.
    """
    stream = r.content
    tap = BodyTap(stream, provider, resp, stamped, limit, pacer)
    transport = r.connection.transport if r.connection is not None else None
    if not stream.is_eof() and stream.exception() is None:
        if transport is None:
            raise RequestError("connection", "connection closed mid-response", retryable=True)
        tap.attach(transport, chunked=_plain_chunked(r))
        timer = asyncio.get_running_loop().call_later(
            max(deadline - time.perf_counter(), 0.0), tap.expire
        )
        try:
            if stream.exception() is None:  # what came with the head may have ended it
                await stream.wait_eof()
        finally:
            timer.cancel()
            tap.detach()
        if tap.failure is not None:  # also when it came in the read that ended the body
            raise tap.failure
    tap.finish()


class BodyTap(asyncio.Protocol):
    """Sits between a transport and aiohttp's protocol while a body streams in."""

    def __init__(
        self,
        stream: aiohttp.StreamReader,
        provider: ResponseFormat,
        resp: Response,
        stamped: Any,
        limit: int,
        pacer: Pacer | None = None,
    ) -> None:
        self._stream = stream
        self._provider = provider
        self._resp = resp
        self._stamped = stamped
        self._limit = limit
        self._decoder: Decoder = provider.decoder()
        self._inner: Any = None  # aiohttp's protocol, while attached
        self._transport: asyncio.BaseTransport | None = None
        # Per read: the body bytes received by its end, and when it arrived (raw stamp).
        self.offsets = [stream.total_bytes]
        self.stamps: list[bytes | float] = [self._now()]
        self._parts: list[bytes] = []  # body taken from aiohttp's buffer, not framed yet
        self._taken = 0  # body bytes taken from aiohttp's buffer
        self._framed = 0  # body bytes framed
        self._edge = b""
        self._times: list[float] = []  # `stamps` on the perf_counter clock, as framed
        # The socket's arrivals are watched until the first token is known (see wireclock):
        # till then each read is parsed as it comes.
        self._watching = stamped is not None and stamped.watched
        # What ended the response early (an error event, the size cap, the deadline): kept
        # here too, as aiohttp takes no exception once the read that brought it ended the body.
        self.failure: BaseException | None = None
        # Set when the tap decodes the chunked body itself (see chunked.py); None once the
        # last chunk went to aiohttp. `_direct`: the body never reaches aiohttp's buffer.
        self._chunks: ChunkedBody | None = None
        self._direct = False
        self._pacer = pacer
        # Reads spaced by the pacer: once the first answer token is known, if its stream's
        # reads come closer than the pacer's period (None: not known yet).
        self._paced: bool | None = False
        self._paced_t = 0.0  # when the tap saw the first token's read

    def _now(self) -> bytes | float:
        stamp = self._stamped.stamp if self._stamped is not None else None
        return time.perf_counter() if stamp is None else stamp

    def attach(self, transport: asyncio.BaseTransport, *, chunked: bool = False) -> None:
        """Tap the transport's reads, after checking the body that came with the head.

        `chunked`: the body is plain chunked transfer coding; the tap decodes it
        itself when it knows aiohttp's parser stopped at a chunk boundary.
        """
        self._inner = transport.get_protocol()
        self._transport = transport
        transport.set_protocol(self)
        held = self._stamped.release() if self._stamped is not None else None
        self._take()
        if chunked and held is not None:
            self._chunks = _at_boundary(held, self._taken)
            self._direct = self._chunks is not None
        if self._taken > self._limit:
            self._fail(too_large(self._limit))
        elif self._watching or _ERROR_KEY in self._parts[-1]:
            self._check()

    def detach(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and transport.get_protocol() is self:
            transport.set_protocol(self._inner)

    # The transport's calls, passed on to aiohttp's protocol.

    def data_received(self, data: bytes) -> None:
        if self._chunks is not None:
            self._chunk_received(data)
            return
        self._inner.data_received(data)
        stream = self._stream
        total = stream.total_bytes
        if total != self.offsets[-1]:  # not only the head or chunk framing
            if not self._noted(total):
                return
            if self._watching or _ERROR_KEY in data or _ERROR_KEY in self._edge + data[:_EDGE]:
                self._check()
            elif total - self._taken > DRAIN_BYTES:
                self._take()
            self._edge = data[-_EDGE:]
        if stream.is_eof():
            self.detach()  # aiohttp may pool the connection now: its next reads are not ours

    def _noted(self, total: int) -> bool:
        """Note a read that brought the body to `total` bytes, at its stamp; False if too large."""
        stamped = self._stamped
        stamp = stamped.stamp if stamped is not None else None
        self.offsets.append(total)
        self.stamps.append(time.perf_counter() if stamp is None else stamp)
        if total > self._limit:
            self._fail(too_large(self._limit))
            return False
        return True

    def _chunk_received(self, data: bytes) -> None:
        """A read of a chunked body the tap decodes: noted like aiohttp's would be."""
        try:
            body, last = self._chunks.feed(data)  # type: ignore[union-attr]
        except ChunkError as exc:
            self._fail(RequestError("protocol", f"bad chunked body: {exc}", retryable=True))
            return
        if body:
            self._parts.append(body)
            self._taken = total = self._taken + len(body)
            if not self._noted(total):
                return
            edge = self._edge
            if self._watching or _ERROR_KEY in body or (edge and _ERROR_KEY in edge + body[:_EDGE]):
                self._check()
                if self.failure is not None:  # detached: the connection is dropped
                    return
            # A key is never split at a line's end: most reads end one (a whole event).
            self._edge = b"" if body[-1] == 10 else body[-_EDGE:]
        if last is not None:  # aiohttp ends the message (and pools the connection)
            self._chunks = None
            self._inner.data_received(last)
            if self._stream.is_eof():
                self.detach()
        elif self._paced is not False and self._transport is not None:
            pacer: Pacer = self._pacer  # type: ignore[assignment]
            if self._paced is None:  # a fast stream? (the first token's read, then the next)
                # Pausing costs two syscalls: more than a read that comes that late anyway.
                now = time.perf_counter()
                if self._paced_t:  # two events or more per period, or a pause saves no read
                    self._paced = now - self._paced_t < pacer.period_s / 2
                self._paced_t = now
            if self._paced:
                pacer.pause(self._transport)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.detach()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # The task's side.

    def expire(self) -> None:
        """The attempt's deadline passed: wake the task with a timeout."""
        if not self._stream.is_eof():  # a body that ended in time is not timed out
            self._fail(TimeoutError())

    def finish(self) -> None:
        """At the end of the body: frame and parse what is left; the last read ends it."""
        payloads, times = self._frame()
        if self._framed > self._limit:  # a body that came whole with its head is checked here
            raise too_large(self._limit)
        end = self._times[-1]  # converted with the events' times: never before the last
        events = self._decoder.close()
        payloads += events
        times += [end] * len(events)
        self._resp.ended_t = end
        handle(self._provider, payloads, times, self._resp)

    def _fail(self, exc: BaseException) -> None:
        self.detach()
        if self.failure is None:
            self.failure = exc
        if self._stream.exception() is None and not self._stream.is_eof():
            self._stream.set_exception(exc)

    def _check(self) -> None:
        """Parse what came so far (an error event ends the response, a first token the watch)."""
        try:
            payloads, times = self._frame()
            handle(self._provider, payloads, times, self._resp)
        except Exception as exc:  # raised in the task, not in the transport's callback
            self._fail(exc)
        if self._watching and self._resp.first_token_t is not None:
            self._watching = False
            self._stamped.unwatch()
            # Raw chunk times need every read; without them only the last token's time
            # (itl_mean_s) can move, and only while the reply's last events are still due.
            resp = self._resp
            if (
                self._direct
                and self._pacer is not None
                and resp.chunks is None
                and resp.first_answer_t is not None
            ):
                self._paced = None

    def _take(self) -> None:
        """Move aiohttp's buffered body here (so it never pauses reading for a full buffer)."""
        if not self._direct:
            self._parts.append(self._stream.read_nowait())
            self._taken = self._stream.total_bytes

    def _frame(self) -> tuple[list[bytes], list[float]]:
        """The events completed by the body so far, each timed by the read that completed it."""
        self._take()
        body = b"".join(self._parts)
        self._parts = []
        start, self._framed = self._framed, self._framed + len(body)
        times = self._times
        if len(times) < len(self.stamps):  # each read converted once: one time throughout
            times += perf_times(self.stamps[len(times) :])
        offsets = self.offsets
        last = len(offsets) - 1
        split = self._decoder.split_all(body)
        if split is not None:
            payloads, ends = split
            ends = list(map(add, ends, repeat(start)))
            # A server writing per event: each read ended an event, read k the event k.
            k = bisect_left(offsets, ends[0], 0, last) if ends else 0
            if offsets[k : k + len(ends)] == ends:
                return payloads, times[k : k + len(ends)]
            reads = map(bisect_left, repeat(offsets), ends, repeat(0), repeat(last))
            return payloads, list(map(times.__getitem__, reads))
        # Not plain events from an event boundary: frame read by read, as they came.
        payloads, event_times = [], []
        position = start
        for k in range(bisect_left(offsets, start + 1), last + 2):
            end = offsets[k] if k <= last else self._framed  # bytes aiohttp fed past our reads
            if end <= position:
                continue
            events = self._decoder.feed(body[position - start : end - start])
            payloads += events
            event_times += [times[min(k, last)]] * len(events)
            position = end
        return payloads, event_times


class Pacer:
    """Reads of the streams past their first answer token: at most one each per PACE_S.

    A server writing one event per token makes a read (a loop turn, a syscall,
    a tap call) per token; a paused stream's bytes wait in the kernel, which
    stamps the latest packet's arrival, and one read takes them all. TTFT and
    TTFA are known before a stream is paced, and the end is stamped when its
    last packet arrived, so `ttft_s`, `ttfa_s` and `latency_s` stay exact; only
    `last_token_t` (so `itl_mean_s`) may take the time of the events after the
    last token that came in the same read (at most PACE_S later). With raw
    chunk times (`[run] chunk_times`) streams are not paced; nor are streams
    whose reads come PACE_S / 2 or more apart (most at a real server's token
    rate): a pause and resume costs more than half a read (cachegrind, here),
    so it must save at least one.
    """

    def __init__(self, period_s: float = PACE_S) -> None:
        self.period_s = period_s
        self._paused: list[asyncio.BaseTransport] = []
        self._timer: asyncio.TimerHandle | None = None

    def pause(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]
        self._paused.append(transport)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.period_s, self._resume)

    def _resume(self) -> None:
        paused, self._paused, self._timer = self._paused, [], None
        for transport in paused:
            transport.resume_reading()  # type: ignore[attr-defined]  # closed: ignored


def _plain_chunked(r: aiohttp.ClientResponse) -> bool:
    """The body is HTTP/1.1 chunked transfer coding of the content itself (not compressed)."""
    headers = r.headers
    return (
        r.version == aiohttp.HttpVersion11
        and headers.get("Transfer-Encoding", "").lower() == "chunked"
        and headers.get("Content-Encoding", "identity").lower() == "identity"
    )


def _at_boundary(head: bytes, body_bytes: int) -> ChunkedBody | None:
    """A decoder in the state aiohttp's parser is in after `head` (the reply's first read).

    None unless that read ends at a chunk boundary, carrying exactly the
    `body_bytes` aiohttp has: then its parser waits for a chunk-size line.
    """
    end = head.find(b"\r\n\r\n")
    chunks = ChunkedBody()
    try:
        body, last = chunks.feed(head[end + 4 :]) if end >= 0 else (b"", b"")
    except ChunkError:
        return None
    return chunks if last is None and chunks.idle and len(body) == body_bytes else None


def handle(
    provider: ResponseFormat, payloads: list[bytes], times: list[float], resp: Response
) -> None:
    with parsing(resp):
        provider.handle_batch(payloads, times, resp)


@contextmanager
def parsing(resp: Response) -> Iterator[None]:
    """Server data of an unexpected shape is the server's protocol error, retried.

    Only the wire format's parsing runs inside; an exception anywhere else is a
    bug of ours and propagates.
    """
    try:
        yield
    except SHAPE_ERRORS as exc:
        raise RequestError(
            "protocol",
            f"unexpected response shape ({type(exc).__name__}: {_reason(exc)})",
            http_status=resp.http_status,
            retryable=True,
        ) from None


def too_large(limit: int) -> RequestError:
    return RequestError(
        "response_too_large",
        f"response larger than max_response_bytes = {limit:,} bytes; connection dropped",
    )


def _reason(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())[:200]
