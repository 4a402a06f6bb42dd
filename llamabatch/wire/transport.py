"""The one module that does HTTP: send a request, feed its bytes to the wire format.

Every aiohttp and socket exception is translated into `RequestError` here.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import aiohttp
import anyio

from llamabatch.config.schema import DEFAULT_MAX_RESPONSE_BYTES
from llamabatch.errors import RequestError
from llamabatch.wire.bodytap import Pacer, parsing, read_stream, too_large
from llamabatch.wire.provider import ResponseFormat
from llamabatch.wire.request import HttpRequest
from llamabatch.wire.response import Response
from llamabatch.wire.wireclock import EXCHANGES, Exchange, WireClock

log = logging.getLogger(__name__)
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Sent only to the origin they were configured for (a redirect elsewhere drops them).
_CREDENTIAL_HEADER_RE = re.compile(r"(?i)auth|key|token|secret|cookie")
MAX_ERROR_BODY = 64 * 1024
MAX_FETCH_BODY = 4 * 1024 * 1024
READ_BUFSIZE = 256 * 1024
CONNECT_TIMEOUT_S = 10.0  # a host that never answers the handshake is down, not slow


class Transport:
    """A pooled HTTP client shared by every model of a run."""

    def __init__(self, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._wire = WireClock()
        self._pacer = Pacer()

    async def __aenter__(self) -> Transport:
        connector = aiohttp.TCPConnector(
            limit=0, ttl_dns_cache=300, socket_factory=self._wire.socket
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=READ_BUFSIZE,
            auto_decompress=True,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        try:
            if session is not None:
                await session.close()
        finally:
            self._wire.close()  # the watcher thread, whatever closing the connections raised

    async def send(
        self, request: HttpRequest, provider: ResponseFormat, resp: Response, timeout_s: float
    ) -> None:
        """Send `request`, filling `resp` (with monotonic start and end times).

        Response times are when the bytes reached this machine (see wireclock),
        not when this task got round to reading them.

        `timeout_s` bounds the whole attempt, from connect to the last byte.
        """
        assert self._session is not None, "use `async with Transport()`"
        resp.started_t = time.perf_counter()
        deadline = resp.started_t + timeout_s
        exchanges: list[Exchange] = []  # its own times; exact TTFT however late the loop reads
        noted = EXCHANGES.set((exchanges, request.stream))
        try:
            await self._exchange(
                self._session, request, provider, resp, timeout_s, deadline, exchanges
            )
        except aiohttp.ConnectionTimeoutError:
            raise RequestError(
                "connection",
                f"could not connect within {min(timeout_s, CONNECT_TIMEOUT_S):g} s",
                retryable=True,
            ) from None
        except TimeoutError:
            raise RequestError(
                "timeout",
                f"no complete response within {timeout_s:g} s",
                http_status=resp.http_status,
                retryable=True,
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise RequestError(
                "connection",
                f"connection broke mid-response: {_reason(exc)}",
                http_status=resp.http_status,
                retryable=True,
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _connection_error(exc) from None
        finally:
            EXCHANGES.reset(noted)
            # Only this request's watches: a connection it used may be pooled and written
            # to by another request before this runs (none in aiohttp 3.14: no await
            # between the pool's release and here; the numbers keep it so regardless).
            for exchange in exchanges if request.stream else ():
                exchange.socket.unwatch(exchange.number)
            resp.ended_t = resp.ended_t or time.perf_counter()  # a complete read set it
            resp.settle()

    async def fetch(self, request: HttpRequest, timeout_s: float) -> tuple[int, bytes]:
        """One small request (a model list, a tokenizer): its status and (capped) body."""
        assert self._session is not None, "use `async with Transport()`"
        try:
            with anyio.fail_after(timeout_s):
                async with self._session.request(
                    request.method, request.url, data=request.body or None, headers=request.headers
                ) as r:
                    if r.history:
                        log.info("%s redirected to %s", request.url, r.url)
                    return r.status, await _read_capped(r.content, MAX_FETCH_BODY)
        except TimeoutError:
            raise RequestError("timeout", f"no answer within {timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _connection_error(exc) from None

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        request: HttpRequest,
        provider: ResponseFormat,
        resp: Response,
        timeout_s: float,
        deadline: float,
        exchanges: list[Exchange],
    ) -> None:
        url, headers = request.url, request.headers
        timeout = _timeout(timeout_s)
        for _ in range(MAX_REDIRECTS + 1):
            async with session.post(
                url, data=request.body, headers=headers, timeout=timeout, allow_redirects=False
            ) as r:
                resp.http_status = r.status
                resp.headers = r.headers
                # This request's own times: its connection may be pooled and written to by
                # the next request before this task reads them (a body read whole).
                wire = self._wire.socket_of(r.connection and r.connection.transport)
                exchange = wire.exchange if wire is not None else None
                if wire is None and exchanges:  # pooled again already: the body came whole
                    exchange = exchanges[-1]
                    wire = exchange.socket
                if wire is not None and not 200 <= r.status < 300:
                    for watched in exchanges:  # no token to time
                        if watched.socket is wire:
                            wire.unwatch(watched.number)
                if r.status in REDIRECTS:
                    url, headers = _redirect(url, headers, r)
                    continue
                if not 200 <= r.status < 300:
                    body = await _read_capped(r.content, MAX_ERROR_BODY)
                    raise provider.error_for_status(r.status, r.headers, body)
                arrival = time.perf_counter if exchange is None else exchange.arrival
                if exchange is not None and exchange.sent_t > resp.started_t:
                    resp.started_t = exchange.sent_t  # the request reached the wire only now
                resp.first_byte_t = arrival() if exchange is None else exchange.first_arrival()
                try:
                    if not request.stream:
                        body = await _read_body(r, self.max_response_bytes)
                        resp.ended_t = arrival()
                        with parsing(resp):
                            provider.parse_body(body, resp, resp.ended_t)
                        return
                    await read_stream(
                        r, provider, resp, wire, self.max_response_bytes, deadline, self._pacer
                    )
                except RequestError:
                    r.close()  # the rest of the body is unwanted: drop the connection
                    raise
            if not provider.is_complete(resp):
                raise RequestError(
                    "protocol",
                    "stream ended before the response was complete (truncated)",
                    http_status=resp.http_status,
                    retryable=True,
                )
            return
        raise RequestError("protocol", f"more than {MAX_REDIRECTS} redirects from {request.url}")

    async def call(
        self,
        request: HttpRequest,
        timeout_s: float,
        *,
        upload: tuple[Path, str] | None = None,
        download: Path | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request of the Files or Batches endpoints: status, headers and (capped) body.

        `upload = (path, purpose)` sends the file as multipart form data, read as
        it goes; with `download`, a 2xx body is written to that file instead of
        returned, so neither holds a whole batch file in memory.
        """
        assert self._session is not None, "use `async with Transport()`"
        try:
            with anyio.fail_after(timeout_s):
                if upload is not None:
                    return await self._upload(request, *upload)
                async with self._session.request(
                    request.method, request.url, data=request.body or None, headers=request.headers
                ) as r:
                    if download is None or not 200 <= r.status < 300:
                        return r.status, r.headers, await _read_capped(r.content, MAX_FETCH_BODY)
                    await anyio.to_thread.run_sync(download.unlink, True)
                    async for chunk in r.content.iter_chunked(READ_BUFSIZE):
                        await anyio.to_thread.run_sync(_append, download, chunk)
                    return r.status, r.headers, b""
        except TimeoutError:
            raise RequestError(
                "timeout",
                f"{request.method} {request.url}: no answer within {timeout_s:g} s",
                retryable=True,
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise RequestError(
                "connection", f"connection broke mid-response: {_reason(exc)}", retryable=True
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RequestError(
                "connection", f"{type(exc).__name__}: {_reason(exc)}", retryable=True
            ) from None

    async def _upload(
        self, request: HttpRequest, path: Path, purpose: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        assert self._session is not None
        with path.open("rb") as fh:
            form = aiohttp.FormData()
            form.add_field("purpose", purpose)
            form.add_field("file", fh, filename=path.name, content_type="application/jsonl")
            async with self._session.post(request.url, data=form, headers=request.headers) as r:
                return r.status, r.headers, await _read_capped(r.content, MAX_FETCH_BODY)


def _redirect(
    url: str, headers: Mapping[str, str], r: aiohttp.ClientResponse
) -> tuple[str, Mapping[str, str]]:
    """Where a 307/308 sends the POST next, with credentials dropped when the origin changes.

    A 301/302/303 would turn the POST into a body-less GET (what browsers do):
    that is never what an API client wants, so the row fails, naming the target.
    """
    location = r.headers.get("Location")
    target = urllib.parse.urljoin(url, location) if location else ""
    shown = _short(target)
    if not target.startswith(("http://", "https://")):
        raise RequestError(
            "protocol", f"HTTP {r.status} redirect to {shown or 'nowhere'}", http_status=r.status
        )
    if r.status not in (307, 308):
        raise RequestError(
            "invalid_request",
            f"HTTP {r.status} redirect to {shown}: a POST is not re-sent there as a GET; "
            "set base_url to the new address",
            http_status=r.status,
        )
    log.info("%s redirected to %s", url, target)
    if _origin(target) != _origin(url):
        headers = {k: v for k, v in headers.items() if not _CREDENTIAL_HEADER_RE.search(k)}
    return target, headers


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


async def _read_body(r: aiohttp.ClientResponse, limit: int) -> bytes:
    """A whole body of at most `limit` bytes (a longer one is refused before it is all read)."""
    if r.content_length is not None and r.content_length > limit:
        raise too_large(limit)
    body = await _read_capped(r.content, limit + 1)
    if len(body) > limit:
        raise too_large(limit)
    return body


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes of a body (error pages can be large; the head says enough)."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


@functools.lru_cache(maxsize=8)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """aiohttp's own deadline for a whole attempt (connect to last byte).

    Used instead of anyio.fail_after on this path: a cancel scope per request
    measured ~140k CPU instructions, about a tenth of what a lean client
    spends on a whole streamed request; aiohttp's timer costs a fraction.
    """
    return aiohttp.ClientTimeout(total=seconds, sock_connect=min(seconds, CONNECT_TIMEOUT_S))


def _connection_error(exc: BaseException) -> RequestError:
    """A connection failure; a refused connection means nothing listens there (stops the model)."""
    refused = isinstance(getattr(exc, "os_error", exc), ConnectionRefusedError)
    reason = (
        f"connection refused: {_reason(exc)}"
        if refused
        else f"{type(exc).__name__}: {_reason(exc)}"
    )
    return RequestError("connection", reason, retryable=True, stops_model=refused)


def _reason(exc: BaseException) -> str:
    return _short(str(exc) or type(exc).__name__)


def _short(text: str) -> str:
    return " ".join(text.split())[:200]


def _append(path: Path, chunk: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(chunk)
