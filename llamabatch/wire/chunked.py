"""HTTP/1.1 chunked transfer coding, decoded read by read (bodytap's body path).

aiohttp decodes a chunked body with a C parser, but hands every chunk through
several Python calls on its way in (the protocol, the stream reader's chunk
bookkeeping) and out again (a `resume_reading` round per chunk read back):
for servers that write one SSE event per token, that is most of a read's cost.
The body tap decodes a streamed body itself and gives aiohttp only the last
chunk (`0\\r\\n...`), so aiohttp still ends the message, reads any trailers
and pools the connection.
"""

from __future__ import annotations

_HEX = b"0123456789abcdefABCDEF"
_MAX_LINE = 4096  # a chunk-size line (with extensions) longer than this is not HTTP


class ChunkError(ValueError):
    """The body is not valid chunked transfer coding."""


class ChunkedBody:
    """Decode a chunked body from any split of its bytes.

    `feed` returns the body bytes a read carried and, once the last chunk
    begins, the raw bytes from its size line on (what aiohttp's parser, left
    at a chunk boundary, must read to end the message).
    """

    __slots__ = ("_crlf", "_left", "_line")

    def __init__(self) -> None:
        self._line = b""  # a size line split across reads
        self._left = 0  # data bytes of the current chunk still to come
        self._crlf = 0  # bytes of the CRLF after a chunk's data still to come

    @property
    def idle(self) -> bool:
        """At a chunk boundary: the next byte starts a size line."""
        return not (self._line or self._left or self._crlf)

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        if not (self._line or self._left or self._crlf):
            # One whole chunk, from a boundary: what a server writing per event sends.
            eol = data.find(b"\r\n")
            line = data[:eol]
            if 0 < eol <= 16 and not line.strip(_HEX):  # no extensions
                end = eol + 2 + int(line, 16)
                if end > eol + 2 and len(data) == end + 2 and data[end:] == b"\r\n":
                    return data[eol + 2 : end], None
        return self._feed(data)

    def _feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        parts: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n:
            if self._left:
                take = min(self._left, n - pos)
                parts.append(data[pos : pos + take])
                self._left -= take
                pos += take
                if not self._left:
                    self._crlf = 2
            elif self._crlf:
                take = min(self._crlf, n - pos)
                expected = b"\r\n"[2 - self._crlf : 2 - self._crlf + take]
                if data[pos : pos + take] != expected:
                    raise ChunkError("no CRLF after a chunk's data")
                self._crlf -= take
                pos += take
            else:
                eol = data.find(b"\n", pos)
                if eol < 0:
                    self._line += data[pos:]
                    if len(self._line) > _MAX_LINE:
                        raise ChunkError("chunk-size line too long")
                    break
                line, self._line = self._line + data[pos : eol + 1], b""
                size = _size(line.rstrip(b"\r\n"))
                if not size:  # the last chunk: aiohttp reads it and any trailers
                    return b"".join(parts), line + data[eol + 1 :]
                self._left = size
                pos = eol + 1
        return b"".join(parts), None


def _size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip(b" \t")
    if not digits or digits.strip(_HEX) or len(digits) > 16:
        raise ChunkError(f"bad chunk size {line[:40]!r}")
    return int(digits, 16)
