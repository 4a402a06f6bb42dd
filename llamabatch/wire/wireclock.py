"""When bytes crossed the wire: kernel receive times for aiohttp's client sockets.

A timestamp taken when a coroutine wakes up includes however long the event
loop took to get there; under a burst of streams that is the client's own
queueing, and it would be reported as the model's time to first token. On
Linux the kernel stamps each received packet (SO_TIMESTAMPNS); the sockets
made here read with `recvmsg` to collect that stamp, so a chunk's time is
when it reached this machine, however busy the loop was.

asyncio's selector transports read through `sock.recv` / `sock.recv_into`,
which these sockets override. Where that does not hold (uvloop reads the file
descriptor itself; other systems have no such stamp) times fall back to when
the bytes are read, the usual client-side measurement.

The kernel keeps one stamp per queued packet, and merges packets that queue
up unread into one with the latest stamp: a loop that is late by more than
the gap between two chunks would time the first token by a later one. So
until a streamed response's first token is known, a watcher thread (an
edge-triggered epoll) notes each arrival as it happens (how many bytes had
arrived, and the newest packet's stamp, by peeking), and the loop's reads
end where those arrivals end, each timed by its own arrival. The watcher
keeps the GIL for all the arrivals of one wake-up, so while the loop is busy
in Python it is late by about the interpreter's switch interval, not by a
whole loop turn (a machine short of CPU delays it too). Processes llamabatch
owns (the command line's, workers, Ray actors) run with 1 ms instead of 5
(runs/gcsetting.py); a library call leaves the host's setting alone. The reads after
a streamed reply's head are held until the task has put the body's tap in
place (bodytap), so each is timed on its own.

The same sockets note when each request's first byte was written: on
Python 3.11 aiohttp writes a request body from a task of its own, one loop
turn after the request was started.
"""

from __future__ import annotations

import contextvars
import platform
import socket
import sys
import time
import weakref
from typing import Any

from llamabatch.wire.arrivals import ANCILLARY, RECV_BYTES, TIMESPEC, ArrivalWatcher, Peek

# Linux's SO_TIMESTAMPNS (asm-generic value; Python's socket module lacks it).
# Architectures with their own socket option numbers are left out.
_SO_TIMESTAMPNS = 35
_GENERIC_ABI = {"x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv7l", "riscv64"}
SUPPORTED = sys.platform == "linux" and platform.machine().lower() in _GENERIC_ABI
_TIMESPEC = TIMESPEC
_ANCILLARY = ANCILLARY if SUPPORTED else 0
# Set (by the transport) while a request is sent: (a list, watch). Its exchange on each
# socket it is written to is added to the list; with `watch` (a streamed request), the
# socket's arrivals are watched until its first token is known (or the request is over:
# the transport then unwatches them, each only if no later request has used it since).
EXCHANGES: contextvars.ContextVar[tuple[list[Exchange], bool] | None] = contextvars.ContextVar(
    "llamabatch_exchanges", default=None
)
_OPEN: Any = object()  # an exchange's reply still being read


class Exchange:
    """One request and its reply on a connection: times that stay its own.

    A kept-alive connection goes back to aiohttp's pool once a reply is read,
    before its task may have looked at the reply's times; the next request
    written to it must not move them. `sent_t`: when the request's first byte
    was written (`time.perf_counter`); `number`: which request on the socket.
    """

    __slots__ = ("_last", "first_stamp", "number", "sent_t", "socket")

    def __init__(self, sock: StampedSocket, number: int, sent_t: float) -> None:
        self.socket = sock
        self.number = number
        self.sent_t = sent_t
        self.first_stamp: bytes | None = None  # the reply's first read's raw stamp
        self._last: bytes | None = _OPEN  # the reply's last read's, once the next was written

    def arrival(self) -> float:
        """When this reply's bytes read so far arrived (now, if no read was stamped)."""
        stamp = self.socket.stamp if self._last is _OPEN else self._last
        return time.perf_counter() if stamp is None else perf_times([stamp])[0]

    def first_arrival(self) -> float:
        """When the reply's first bytes arrived (however late its task looked)."""
        stamp = self.first_stamp
        return self.arrival() if stamp is None else perf_times([stamp])[0]

    def close(self, stamp: bytes | None) -> None:
        """The next request was written: this reply's reads ended with `stamp`."""
        self._last = stamp


class StampedSocket(socket.socket):
    """A client socket that remembers when its bytes crossed the wire.

    `arrival()`: the kernel's receive time of the latest read. Packets that
    queue up unread are merged and keep the latest one's stamp, so when the
    loop was away longer than the gap between two chunks they share the later
    time: never earlier than the bytes really arrived (while watched, reads
    end where each noted arrival ends and take its time). `stamp`: that time
    still raw (a `timespec`, None before the first stamped read), for code
    that notes it per read and converts many at once (`perf_times`).
    `sent_t`: when the current request's first byte was written (the first
    write after a read). Times are on the `time.perf_counter` clock; `sent_t`
    is 0.0 until known. `request`: how many requests were written to it (the
    current one's number). `exchange`: the current request's own times.
    """

    __slots__ = (
        "_arrivals",
        "_head",
        "_held",
        "_read",
        "_watcher",
        "_writing",
        "exchange",
        "request",
        "sent_t",
        "stamp",
    )

    def __init__(self, family: int = -1, kind: int = -1, proto: int = -1, fileno: Any = None):
        super().__init__(family, kind, proto, fileno)  # the signature `dup()` calls
        self.sent_t = 0.0
        self.request = 0
        self.stamp: bytes | None = None  # the latest read's raw timespec
        self._writing = False
        self._read = 0  # bytes read over the socket's life
        # Noted by the watcher thread: (bytes arrived by then, the newest packet's stamp).
        self._arrivals: list[tuple[int, bytes]] = []
        self._watcher: ArrivalWatcher | None = None
        self._held = False
        self._head: bytes | None = None
        self.exchange: Exchange | None = None

    def arrival(self) -> float:
        """When the bytes read so far arrived (now, if no read was stamped)."""
        stamp = self.stamp  # converted here, not per read: reads are the hot path
        return time.perf_counter() if stamp is None else perf_times([stamp])[0]

    @property
    def watched(self) -> bool:
        watcher = self._watcher
        return watcher is not None and watcher.watches(self)

    def unwatch(self, request: int | None = None) -> None:
        """Stop noting arrivals (the first token is known, or the request is over).

        With `request`, only while that request is still the socket's current
        one: once its reply is read, aiohttp may pool the connection and give
        it to another request, whose own watch (and hold) must stay.
        """
        if request is not None and request != self.request:
            return
        self._held = False
        if self._watcher is not None:
            self._watcher.unwatch(self)

    def close(self) -> None:
        self.unwatch()
        super().close()

    def send(self, data: Any, flags: int = 0) -> int:
        if not self._writing:
            self._wrote_first()
        return super().send(data, flags)

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        if not self._writing:
            self._wrote_first()
        return super().sendmsg(buffers, *args)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        # At most RECV_BYTES at a time: asyncio asks for 256 KiB, a buffer glibc
        # maps and unmaps on every read (~15 µs, most of a streamed event's cost).
        if self._arrivals or self._writing or self._held:
            return self._recv_noted(min(bufsize, RECV_BYTES), flags)
        data, ancillary, _, _ = self.recvmsg(min(bufsize, RECV_BYTES), _ANCILLARY, flags)
        if ancillary:
            self.stamp = ancillary[-1][2]  # the only ancillary data enabled
        self._read += len(data)
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer)
        view = view[:nbytes] if nbytes else view
        if self._arrivals or self._writing or self._held:
            data = self._recv_noted(len(view), flags)
            view[: len(data)] = data
            return len(data)
        n, ancillary, _, _ = self.recvmsg_into([view], _ANCILLARY, flags)
        if ancillary:
            self.stamp = ancillary[-1][2]
        self._read += n
        return n

    def _recv_noted(self, bufsize: int, flags: int) -> bytes:
        """A read of a response's first bytes, or ending where a noted arrival ends."""
        if self._held:
            raise BlockingIOError  # asyncio tries again next loop turn (see `_hold_after`)
        arrivals = self._arrivals
        while arrivals and arrivals[0][0] <= self._read:
            del arrivals[0]  # bytes read already
        noted = arrivals[0] if arrivals else None
        if noted is not None:
            bufsize = min(bufsize, noted[0] - self._read)
        data, ancillary, _, _ = self.recvmsg(bufsize, _ANCILLARY, flags)
        stamp = ancillary[-1][2] if ancillary else None
        if noted is not None and (
            stamp is None or _TIMESPEC.unpack(noted[1]) < _TIMESPEC.unpack(stamp)
        ):
            stamp = noted[1]  # this read's last byte had arrived by the noted time
        if stamp is not None:
            self.stamp = stamp
        self._read += len(data)
        if self._writing:  # the reply's first bytes
            self._writing = False
            # Only a plain HTTP head: under TLS this read may be the server's own record (a
            # session ticket after the handshake); `first_arrival` then falls back to `arrival`.
            if data.startswith(b"HTTP/") and self.exchange is not None:
                self.exchange.first_stamp = stamp
                self._hold_after(data)
        return data

    def _hold_after(self, data: bytes) -> None:
        """Read no more after a streamed 2xx head until its body's reader is in place.

        The task that puts the body's tap in place (bodytap) may run only after
        more loop turns; reads in between could be timed only all together.
        """
        if (
            data[9:10] == b"2"
            and data.startswith(b"HTTP/1.")
            and b"\r\n\r\n" in data
            and self.watched
        ):
            self._held = True
            self._head = data

    def release(self) -> bytes | None:
        """Read again after a held head (the body's reader is in place).

        Returns the held read (the head and whatever of the body came with it:
        all that aiohttp's parser has seen of the reply), or None if none was held.
        """
        head, self._head = self._head, None
        held, self._held = self._held, False
        return head if held else None

    def _wrote_first(self) -> None:
        self.sent_t = time.perf_counter()
        self.request += 1
        self._writing = True
        self._held = False
        self._head = None
        if self.exchange is not None:
            self.exchange.close(self.stamp)
        self.exchange = exchange = Exchange(self, self.request, self.sent_t)
        noted = EXCHANGES.get()
        if noted is not None:
            noted[0].append(exchange)
            if noted[1] and self._watcher is not None:
                self._watcher.watch(self)

    def note_arrival(self, peek: Peek) -> None:
        """(The watcher thread.) Note how many bytes have arrived and the newest one's stamp."""
        read = self._read  # taken first: a read in between makes the count low, never high
        noted = peek(self)
        if noted is not None:
            self._arrivals.append((read + noted[0], noted[1]))


def perf_times(stamps: list[bytes | float]) -> list[float]:
    """Raw kernel stamps (`stamp`) on the `time.perf_counter` clock; floats pass unchanged.

    All share one reading of both clocks, renewed every `REFERENCE_S` (they
    drift apart by NTP's slew): one per call was off by however long the
    thread was held between its two reads (a GIL switch to the watcher), and
    could put a first token after its response's end.
    """
    ref, ref_ns = _REFERENCE if time.perf_counter() - _REFERENCE[0] <= REFERENCE_S else _renew()
    try:
        pairs = _TIMESPEC.iter_unpack(b"".join(stamps))  # type: ignore[arg-type]
    except TypeError:  # not all raw: some reads had no stamp
        return [s if isinstance(s, float) else perf_times([s])[0] for s in stamps]
    return [ref - (ref_ns - s * 1_000_000_000 - n) * 1e-9 for s, n in pairs]


def _renew() -> tuple[float, int]:
    """Both clocks read: `time_ns` between two perf_counter reads, the tightest of a few."""
    global _REFERENCE
    best = float("inf")
    for _ in range(5):
        before, ns, after = time.perf_counter(), time.time_ns(), time.perf_counter()
        if after - before < best:
            best, _REFERENCE = after - before, ((before + after) / 2, ns)
    return _REFERENCE


REFERENCE_S = 1.0
_REFERENCE = (-REFERENCE_S - 1.0, 0)  # (perf_counter, time_ns) at the same moment


class WireClock:
    """Makes the connector's sockets and tells when a connection's bytes arrived."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakValueDictionary[int, StampedSocket] = (
            weakref.WeakValueDictionary()
        )
        self._watcher = ArrivalWatcher() if SUPPORTED else None

    def close(self) -> None:
        """Stop the watcher thread (the connections are closed; a new one starts if needed)."""
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = ArrivalWatcher()

    def socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's `socket_factory`: a stamped socket where the system supports it."""
        family, kind, proto = addr_info[:3]
        if not SUPPORTED:
            return socket.socket(family, kind, proto)
        sock = StampedSocket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            return sock  # never stamped: `arrival` falls back to the caller's clock
        self._sockets[sock.fileno()] = sock
        sock._watcher = self._watcher
        return sock

    def socket_of(self, transport: Any) -> StampedSocket | None:
        """The stamped socket under an asyncio transport, if it is one of ours."""
        raw = transport.get_extra_info("socket") if transport is not None else None
        return self._sockets.get(raw.fileno()) if raw is not None else None
