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

import contextlib
import contextvars
import ctypes
import os
import platform
import select
import socket
import struct
import sys
import threading
import time
import weakref
from typing import Any

# Linux's SO_TIMESTAMPNS (asm-generic value; Python's socket module lacks it).
# Architectures with their own socket option numbers are left out.
_SO_TIMESTAMPNS = 35
_GENERIC_ABI = {"x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv7l", "riscv64"}
SUPPORTED = sys.platform == "linux" and platform.machine().lower() in _GENERIC_ABI
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if SUPPORTED else 0
RECV_BYTES = 64 * 1024  # below glibc's mmap threshold (128 KiB): a heap buffer per read
# Set (by the transport) while a streamed request is sent: the sockets it is written
# to are added to the list, each with its request's number on that socket (`request`),
# and their arrivals watched until its first token is known (or the request is over:
# the transport then unwatches them, each only if no later request has used it since).
WATCH_ARRIVALS: contextvars.ContextVar[list[tuple[StampedSocket, int]] | None] = (
    contextvars.ContextVar("llamabatch_watch_arrivals", default=None)
)


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
    current one's number).
    """

    __slots__ = (
        "_arrivals",
        "_held",
        "_read",
        "_watcher",
        "_writing",
        "first_stamp",
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
        self.first_stamp: bytes | None = None  # the current reply's first read's raw stamp

    def arrival(self) -> float:
        """When the bytes read so far arrived (now, if no read was stamped)."""
        stamp = self.stamp  # converted here, not per read: reads are the hot path
        return time.perf_counter() if stamp is None else perf_times([stamp])[0]

    def first_arrival(self) -> float:
        """When the current reply's first bytes arrived (however late its task looked)."""
        stamp = self.first_stamp
        return self.arrival() if stamp is None else perf_times([stamp])[0]

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
            if data.startswith(b"HTTP/"):
                self.first_stamp = stamp
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

    def release(self) -> None:
        """Read again after a held head (the body's reader is in place)."""
        self._held = False

    def _wrote_first(self) -> None:
        self.sent_t = time.perf_counter()
        self.request += 1
        self._writing = True
        self.first_stamp = None
        self._held = False
        watch = WATCH_ARRIVALS.get()
        if watch is not None and self._watcher is not None:
            watch.append((self, self.request))
            self._watcher.watch(self)

    def note_arrival(self, peek: _Peek) -> None:
        """(The watcher thread.) Note how many bytes have arrived and the newest one's stamp."""
        read = self._read  # taken first: a read in between makes the count low, never high
        noted = peek(self)
        if noted is not None:
            self._arrivals.append((read + noted[0], noted[1]))


class _Peek:
    """MSG_PEEK all that is queued on a socket: (its size, the newest packet's raw stamp).

    Called through `ctypes.PyDLL`, which keeps the GIL over the call: the
    socket module lets go of it around every call, and taking it back while
    the loop runs Python code can wait a switch interval (5 ms) per socket.
    The call never blocks (MSG_DONTWAIT).
    """

    def __init__(self) -> None:
        libc = ctypes.PyDLL(None, use_errno=True)
        self._recvmsg = libc.recvmsg
        self._recvmsg.restype = ctypes.c_ssize_t
        self._buffer = ctypes.create_string_buffer(RECV_BYTES)
        self._control = ctypes.create_string_buffer(_ANCILLARY)
        self._iov = _IOVec(ctypes.cast(self._buffer, ctypes.c_void_p), RECV_BYTES)
        self._msg = _MsgHdr()
        self._msg.iov = ctypes.pointer(self._iov)
        self._msg.iovlen = 1
        self._msg.control = ctypes.cast(self._control, ctypes.c_void_p)
        self._ref = ctypes.byref(self._msg)
        self._flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
        self._header = _ANCILLARY - _TIMESPEC.size  # cmsghdr, aligned: then the timespec

    def __call__(self, sock: socket.socket) -> tuple[int, bytes] | None:
        fd = sock.fileno()
        if fd < 0:
            return None
        msg = self._msg
        msg.controllen = _ANCILLARY
        n = self._recvmsg(fd, self._ref, self._flags)
        if n <= 0 or msg.controllen < _ANCILLARY:
            return None
        return n, self._control.raw[self._header : _ANCILLARY]


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IOVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


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


class ArrivalWatcher:
    """A thread noting each arrival on the sockets it watches, while the loop may be busy."""

    def __init__(self) -> None:
        self._watched: dict[int, StampedSocket] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._epoll: Any = None  # made with the thread, on the first watch
        self._wake = (-1, -1)

    def watches(self, sock: StampedSocket) -> bool:
        return self._watched.get(sock.fileno()) is sock

    def watch(self, sock: StampedSocket) -> None:
        fd = sock.fileno()
        with self._lock:
            if self._watched.get(fd) is sock:
                return
            if self._thread is None:
                self._start()
            self._watched[fd] = sock
            try:  # edge-triggered: one wake per arrival, not per loop turn until it is read
                self._epoll.register(fd, select.EPOLLIN | select.EPOLLET)
            except FileExistsError:  # a closed socket's number, reused
                self._epoll.modify(fd, select.EPOLLIN | select.EPOLLET)

    def unwatch(self, sock: StampedSocket) -> None:
        fd = sock.fileno()
        with self._lock:
            if self._watched.get(fd) is not sock:
                return
            del self._watched[fd]
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._watched.clear()
            os.write(self._wake[1], b"x")
        thread.join()
        self._epoll.close()
        for fd in self._wake:
            os.close(fd)

    def _start(self) -> None:
        self._epoll = select.epoll()
        self._wake = os.pipe()
        self._epoll.register(self._wake[0], select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="llamabatch-arrivals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        epoll, wake, watched, peek = self._epoll, self._wake[0], self._watched, _Peek()
        while True:
            for fd, _ in epoll.poll():
                if fd == wake:
                    return
                sock = watched.get(fd)
                if sock is not None:
                    sock.note_arrival(peek)


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
