"""Messages between a run's parent process and its workers: length-prefixed JSON on a socket.

A message is a JSON array whose first item names it. The worker side also
makes calls (`call`), answered by `["reply", id, result]`; everything else
is handed to the caller's handler in arrival order.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import orjson
from anyio.streams.buffered import BufferedByteReceiveStream

_HEADER = 4  # bytes of big-endian length before each message


class Channel:
    """One end of a socketpair, as a stream of messages."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self._stream = stream
        self._receive = BufferedByteReceiveStream(stream)
        self._send_lock = anyio.Lock()
        self._calls: dict[int, tuple[anyio.Event, list[Any]]] = {}
        self._next_id = 0
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        return cls(await anyio.abc.SocketStream.from_socket(sock))

    async def send(self, *message: Any) -> None:
        data = orjson.dumps(message)
        async with self._send_lock:
            await self._stream.send(len(data).to_bytes(_HEADER, "big") + data)

    async def receive(self) -> list[Any] | None:
        """The next message, or None once the other end is gone."""
        try:
            size = int.from_bytes(await self._receive.receive_exactly(_HEADER), "big")
            return orjson.loads(await self._receive.receive_exactly(size))  # type: ignore[no-any-return]
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            self.closed = True
            return None

    async def call(self, method: str, *args: Any) -> Any:
        """Ask the other end (it answers with `reply`); the answer needs `serve` running."""
        if self.closed:
            raise anyio.BrokenResourceError("the run's parent process is gone")
        self._next_id += 1
        call_id = self._next_id
        done, result = anyio.Event(), list[Any]()
        self._calls[call_id] = (done, result)
        try:
            await self.send("call", call_id, method, args)
            await done.wait()
        finally:
            del self._calls[call_id]
        if not result:
            raise anyio.BrokenResourceError("the run's parent process is gone")
        return result[0]

    async def serve(self, handle: Callable[[list[Any]], None]) -> None:
        """Deliver replies to `call`ers and other messages to `handle` until the end is gone."""
        try:
            while (message := await self.receive()) is not None:
                if message[0] == "reply":
                    waiter = self._calls.get(message[1])
                    if waiter is not None:
                        waiter[1].append(message[2])
                        waiter[0].set()
                else:
                    handle(message)
        finally:
            if self.closed:  # the other end is gone: callers see it as an error
                for done, _ in self._calls.values():
                    done.set()
            # Cancelled instead (the run is ending): callers are cancelled with it.

    async def aclose(self) -> None:
        await self._stream.aclose()
