"""The arrival watcher: a thread noting when bytes reach watched sockets (see wireclock).

It peeks (MSG_PEEK) at each watched socket as bytes arrive, edge-triggered,
and hands the socket how many bytes had arrived and the newest packet's
kernel stamp, so the event loop's reads can end where each arrival ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import struct
import threading
from typing import Any, Protocol

TIMESPEC = struct.Struct("@qq")
ANCILLARY = socket.CMSG_SPACE(TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
RECV_BYTES = 64 * 1024  # below glibc's mmap threshold (128 KiB): a heap buffer per read


class Watched(Protocol):
    def fileno(self) -> int: ...

    def note_arrival(self, peek: Peek) -> None: ...


class Peek:
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
        self._control = ctypes.create_string_buffer(ANCILLARY)
        self._iov = _IOVec(ctypes.cast(self._buffer, ctypes.c_void_p), RECV_BYTES)
        self._msg = _MsgHdr()
        self._msg.iov = ctypes.pointer(self._iov)
        self._msg.iovlen = 1
        self._msg.control = ctypes.cast(self._control, ctypes.c_void_p)
        self._ref = ctypes.byref(self._msg)
        self._flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
        self._header = ANCILLARY - TIMESPEC.size  # cmsghdr, aligned: then the timespec

    def __call__(self, sock: socket.socket) -> tuple[int, bytes] | None:
        fd = sock.fileno()
        if fd < 0:
            return None
        msg = self._msg
        msg.controllen = ANCILLARY
        n = self._recvmsg(fd, self._ref, self._flags)
        if n <= 0 or msg.controllen < ANCILLARY:
            return None
        return n, self._control.raw[self._header : ANCILLARY]


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


class ArrivalWatcher:
    """A thread noting each arrival on the sockets it watches, while the loop may be busy."""

    def __init__(self) -> None:
        self._watched: dict[int, Watched] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._epoll: Any = None  # made with the thread, on the first watch
        self._wake = (-1, -1)

    def watches(self, sock: Watched) -> bool:
        return self._watched.get(sock.fileno()) is sock

    def watch(self, sock: Watched) -> None:
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

    def unwatch(self, sock: Watched) -> None:
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
        epoll, wake, watched, peek = self._epoll, self._wake[0], self._watched, Peek()
        while True:
            for fd, _ in epoll.poll():
                if fd == wake:
                    return
                sock = watched.get(fd)
                if sock is not None:
                    sock.note_arrival(peek)
