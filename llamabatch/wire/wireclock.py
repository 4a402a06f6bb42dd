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

The same sockets note when each request's first byte was written: on
Python 3.11 aiohttp writes a request body from a task of its own, one loop
turn after the request was started.
"""

from __future__ import annotations

import platform
import socket
import struct
import sys
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


class _StampedSocket(socket.socket):
    """A client socket that remembers when its bytes crossed the wire.

    `arrival()`: the kernel's receive time of the latest read. Packets that
    queue up unread are merged and keep the latest one's stamp, so when the
    loop was away longer than the gap between two chunks they share the later
    time: never earlier than the bytes really arrived. `stamp`: that time
    still raw (a `timespec`, None before the first stamped read), for code
    that notes it per read and converts many at once (`perf_times`).
    `sent_t`: when the current request's first byte was written (the first
    write after a read). Times are on the `time.perf_counter` clock; `sent_t`
    is 0.0 until known.
    """

    __slots__ = ("_writing", "sent_t", "stamp")

    def __init__(self, family: int = -1, kind: int = -1, proto: int = -1, fileno: Any = None):
        super().__init__(family, kind, proto, fileno)  # the signature `dup()` calls
        self.sent_t = 0.0
        self.stamp: bytes | None = None  # the latest read's raw timespec
        self._writing = False

    def arrival(self) -> float:
        """When the bytes read so far arrived (now, if no read was stamped)."""
        stamp = self.stamp  # converted here, not per read: reads are the hot path
        return time.perf_counter() if stamp is None else perf_times([stamp])[0]

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
        data, ancillary, _, _ = self.recvmsg(min(bufsize, RECV_BYTES), _ANCILLARY, flags)
        if ancillary:
            self.stamp = ancillary[-1][2]  # the only ancillary data enabled
        self._writing = False
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer)
        n, ancillary, _, _ = self.recvmsg_into(
            [view[:nbytes] if nbytes else view], _ANCILLARY, flags
        )
        if ancillary:
            self.stamp = ancillary[-1][2]
        self._writing = False
        return n

    def _wrote_first(self) -> None:
        self.sent_t = time.perf_counter()
        self._writing = True


def perf_times(stamps: list[bytes | float]) -> list[float]:
    """Raw kernel stamps (`stamp`) on the `time.perf_counter` clock; floats pass unchanged.

    One reading of both clocks serves the whole list.
    """
    now_ns, now = time.time_ns(), time.perf_counter()
    try:
        pairs = _TIMESPEC.iter_unpack(b"".join(stamps))  # type: ignore[arg-type]
    except TypeError:  # not all raw: some reads had no stamp
        return [s if isinstance(s, float) else perf_times([s])[0] for s in stamps]
    return [now - max(now_ns - s * 1_000_000_000 - n, 0) * 1e-9 for s, n in pairs]


class WireClock:
    """Makes the connector's sockets and tells when a connection's bytes arrived."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakValueDictionary[int, _StampedSocket] = (
            weakref.WeakValueDictionary()
        )

    def socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's `socket_factory`: a stamped socket where the system supports it."""
        family, kind, proto = addr_info[:3]
        if not SUPPORTED:
            return socket.socket(family, kind, proto)
        sock = _StampedSocket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            return sock  # never stamped: `arrival` falls back to the caller's clock
        self._sockets[sock.fileno()] = sock
        return sock

    def socket_of(self, transport: Any) -> _StampedSocket | None:
        """The stamped socket under an asyncio transport, if it is one of ours."""
        raw = transport.get_extra_info("socket") if transport is not None else None
        return self._sockets.get(raw.fileno()) if raw is not None else None
