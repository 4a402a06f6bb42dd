"""A minimal HTTP/1.1 server that streams a fixed OpenAI-format chat completion.

Static mode (the default) answers with the whole SSE body in one write, like
nginx serving a file. Timed mode (`--ttft-s`, `--gap-s`) sends the first
content chunk exactly `ttft_s` after the request arrives and each next one
`gap_s` later, scheduled with `loop.call_at` so the server adds little delay;
its own lateness is written to `--stats` so it can be told apart from the
client's. With `--stamp`, each content chunk's text is the time it was really
sent, in microseconds after the request arrived (` t<us>`), so a client's
stored chunk times can be checked chunk by chunk. Per-write mode
(`--step-s`) writes every SSE event separately, as real servers do (one event
per token): every `step_s` (a decode step) each open stream gets its next
event, in its own write. Raw asyncio protocol (no framework) to keep the
server off the critical path.

    python sse_server.py PORT [--tokens 64] [--ttft-s 0.1 --gap-s 0.02] [--stats FILE] [--stamp]
    python sse_server.py PORT --step-s 0.002     # per-write: one write per event
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import orjson


def chunk(
    delta: dict[str, object] | None, finish: str | None = None, usage: object = None
) -> bytes:
    event: dict[str, object] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        event["usage"] = usage
    return b"data: " + orjson.dumps(event) + b"\n\n"


def events(tokens: int) -> tuple[bytes, list[bytes], bytes]:
    """The opening (role-only) event, one event per token, and the closing events."""
    opening = chunk({"role": "assistant", "content": ""})
    body = [chunk({"content": f" tok{i}"}) for i in range(tokens)]
    usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5}
    closing = chunk({}, "stop") + chunk(None, usage=usage) + b"data: [DONE]\n\n"
    return opening, body, closing


LATENESS: list[float] = []  # the server's delay past each first token's due time


class Server(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.opening, self.body, self.closing = events(args.tokens)
        static = self.opening + b"".join(self.body) + self.closing
        self.static = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + f"Content-Length: {len(static)}\r\n\r\n".encode()
            + static
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(
                    head[at + 15 : head.find(b"\r\n", at) if b"\r\n" in head[at:] else None]
                )
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.respond()

    def respond(self) -> None:
        assert self.transport is not None
        if self.args.step_s > 0:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            closing = [e + b"\n\n" for e in self.closing.split(b"\n\n") if e]
            STEPPER.add(self.transport, [self.opening, *self.body, *closing])
            return
        if self.args.ttft_s <= 0:
            self.transport.write(self.static)
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(self.opening)
        )
        for i, event in enumerate(self.body):
            due = start + self.args.ttft_s + i * self.args.gap_s
            last = i == len(self.body) - 1
            tail = self.closing if last else b""
            loop.call_at(due, self.send, event, tail, start, due, i == 0)

    def send(self, event: bytes, tail: bytes, start: float, due: float, first: bool) -> None:
        now = asyncio.get_running_loop().time()
        if first:
            LATENESS.append(now - due)
        if self.args.stamp:
            event = chunk({"content": f" t{round((now - start) * 1e6)}"})
        payload = _chunked(event + tail) + (b"0\r\n\r\n" if tail else b"")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Stepper:
    """Decode steps: every `step_s`, each open stream's next event in a write of its own."""

    def __init__(self) -> None:
        self.step_s = 0.0
        self.streams: list[tuple[asyncio.BaseTransport, list[bytes], list[int]]] = []
        self.ticking = False

    def add(self, transport: asyncio.BaseTransport, events: list[bytes]) -> None:
        self.streams.append((transport, [_chunked(e) for e in events], [0]))
        if not self.ticking:
            self.ticking = True
            asyncio.get_running_loop().call_later(self.step_s, self.step)

    def step(self) -> None:
        active = []
        for transport, events, at in self.streams:
            if transport.is_closing():
                continue
            i = at[0]
            last = i == len(events) - 1
            transport.write(events[i] + b"0\r\n\r\n" if last else events[i])  # type: ignore[attr-defined]
            at[0] = i + 1
            if not last:
                active.append((transport, events, at))
        self.streams = active
        self.ticking = bool(active)
        if active:
            asyncio.get_running_loop().call_later(self.step_s, self.step)


STEPPER = Stepper()


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Server(args), "127.0.0.1", args.port, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)  # the port: 0 picks one
    async with server:
        await stop.wait()
    if args.stats:
        late = sorted(LATENESS)

        def pick(q: float) -> float:
            return late[min(len(late) - 1, int(q * len(late)))] if late else 0.0

        with open(args.stats, "w") as fh:
            json.dump({"n": len(late), "p50_s": pick(0.5), "p99_s": pick(0.99)}, fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--ttft-s", type=float, default=0.0)
    parser.add_argument("--gap-s", type=float, default=0.0)
    parser.add_argument("--stats")
    parser.add_argument("--stamp", action="store_true", help="chunk text = its real send time")
    parser.add_argument("--step-s", type=float, default=0.0, help="per-write mode: step length")
    args = parser.parse_args()
    STEPPER.step_s = args.step_s
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
