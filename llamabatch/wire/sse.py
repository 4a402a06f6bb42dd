"""Incremental framing of streamed responses: Server-Sent Events and NDJSON.

Decoders take raw bytes as they arrive (any split, one byte at a time
included) and return the payloads of the events completed by that chunk. They
never use a line-length limit, so a single event of several megabytes is fine.
"""

from __future__ import annotations

from itertools import accumulate
from operator import add


class LineSplitter:
    """Split a byte stream into lines ended by LF, CRLF or CR, across any chunking."""

    __slots__ = ("_parts", "_skip_lf")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Complete lines (without terminators) ended within `chunk`."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            # A CR at the very end may be half of a CRLF split across reads.
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                self._parts.append(chunk)
            return []
        if self._parts:
            self._parts.append(chunk)
            chunk = b"".join(self._parts)
            self._parts = []
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if tail:
            self._parts.append(tail)
        return lines

    @property
    def idle(self) -> bool:
        """True between lines: nothing buffered, no half of a CRLF pending."""
        return not self._parts and not self._skip_lf

    def close(self) -> bytes:
        """The unterminated last line, if any."""
        tail = b"".join(self._parts)
        self._parts = []
        return tail


class SSEDecoder:
    """Server-Sent Events: yields the (joined) `data` of each event.

    Comment lines (`: keep-alive`) and other fields are ignored. A bare line
    that starts with `{` (some servers write a JSON error without `data:`)
    is yielded as a payload of its own so the wire format can inspect it.
    """

    __slots__ = ("_data", "_lines")

    def __init__(self) -> None:
        self._lines = LineSplitter()
        self._data: bytes | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._data is None and self._lines.idle and b"\r" not in chunk:
            return self._feed_fast(chunk)
        return self._lines_of(chunk)

    def _feed_fast(self, chunk: bytes) -> list[bytes]:
        """Split `data: {...}` events at C speed; any other shape goes line by line."""
        events = chunk.split(b"\n\n")
        tail = events.pop()
        out = [event[6:] for event in events if event.startswith(b"data: ")]
        # The fast split holds when every event was a single `data: ` line.
        if len(out) != len(events) or b"\n" in b"".join(events):
            return self._lines_of(chunk)
        if b"" in out:
            out = [payload for payload in out if payload]
        if tail:
            out += self._lines_of(tail)
        return out

    def split_all(self, data: bytes) -> tuple[list[bytes], list[int]] | None:
        """Payloads of the events completed in `data`, and where in `data` each ends.

        For a stream read whole: the end (just past its blank line) tells which
        read completed an event. None when `data` is not plain `data: {...}`
        events from an event boundary (then `feed` it as it was read).
        """
        if self._data is not None or not self._lines.idle or b"\r" in data:
            return None
        whole = data.rfind(b"\n\n") + 2  # the end of the last complete event
        tail = data[whole:] if whole > 1 else data
        out: list[bytes] = []
        ends: list[int] = []
        if whole > 1:
            if not data.startswith(b"data: "):
                return None
            out = data[6 : whole - 2].split(b"\n\ndata: ")
            # Plain events only: each one line, so two newlines per event, no more.
            if data.count(b"\n", 0, whole) != 2 * len(out):
                return None
            ends = list(map(add, accumulate(map(len, out)), range(8, 8 * len(out) + 1, 8)))
        if b"" in out:
            kept = [i for i, payload in enumerate(out) if payload]
            out, ends = [out[i] for i in kept], [ends[i] for i in kept]
        if tail:
            tail_events = self._lines_of(tail)
            out += tail_events
            ends += [len(data)] * len(tail_events)
        return out, ends

    def _lines_of(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for line in self._lines.feed(data):
            self._line(line, out)
        return out

    def close(self) -> list[bytes]:
        """Flush at end of stream: an event not followed by a blank line is still yielded."""
        out: list[bytes] = []
        tail = self._lines.close()
        if tail:
            self._line(tail, out)
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[bytes]) -> None:
        if not line:
            if self._data:
                out.append(self._data)
            self._data = None
        elif line.startswith(b"data:"):
            value = line[6:] if line[5:6] == b" " else line[5:]
            self._data = value if self._data is None else self._data + b"\n" + value
        elif line[:1] == b"{":
            out.append(line)


class NDJSONDecoder:
    """Newline-delimited JSON: yields each non-blank line."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines = LineSplitter()

    def feed(self, chunk: bytes) -> list[bytes]:
        return [line for line in self._lines.feed(chunk) if line.strip()]

    def split_all(self, data: bytes) -> tuple[list[bytes], list[int]] | None:
        """Like `SSEDecoder.split_all`: the lines completed in `data` and where each ends."""
        if not self._lines.idle or b"\r" in data:
            return None
        lines = data.split(b"\n")
        tail = lines.pop()
        ends = [end + i for i, end in enumerate(accumulate(map(len, lines)), 1)]
        kept = [i for i, line in enumerate(lines) if line.strip()]
        if tail:
            self._lines.feed(tail)
        return [lines[i] for i in kept], [ends[i] for i in kept]

    def close(self) -> list[bytes]:
        tail = self._lines.close()
        return [tail] if tail.strip() else []
