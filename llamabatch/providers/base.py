"""What every wire format provides, and the response state they fill in.

Providers are pure: they build requests, turn bytes into `Response` updates
and classify errors. `transport.py` is the only module that does HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import orjson

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.retry import is_retryable_status, parse_retry_after

MAX_ERROR_MESSAGE = 300
_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(rb"<[^>]+>")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A fully built request: what goes on the wire, nothing else."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    stream: bool


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[bytes]: ...

    def close(self) -> list[bytes]: ...


class Response:
    """The state of one attempt's response, filled in as events arrive."""

    __slots__ = (
        "completion_tokens",
        "done",
        "ended_t",
        "finish_reason",
        "first_token_t",
        "headers",
        "http_status",
        "last_token_t",
        "prompt_tokens",
        "reasoning_parts",
        "started_t",
        "text_parts",
        "token_chunks",
        "total_tokens",
    )

    def __init__(self) -> None:
        self.text_parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.total_tokens: int | None = None
        self.first_token_t: float | None = None
        self.last_token_t: float | None = None
        self.token_chunks = 0
        self.done = False
        self.http_status: int | None = None
        self.headers: Mapping[str, str] | None = None
        self.started_t = 0.0
        self.ended_t = 0.0

    def mark(self, t: float) -> None:
        """Record that a chunk carrying generated output arrived at `t`."""
        if self.first_token_t is None:
            self.first_token_t = t
        self.last_token_t = t
        self.token_chunks += 1

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def set_usage(self, prompt: Any, completion: Any, total: Any) -> None:
        self.prompt_tokens = _int_or_none(prompt)
        self.completion_tokens = _int_or_none(completion)
        self.total_tokens = _int_or_none(total)
        if self.total_tokens is None and None not in (self.prompt_tokens, self.completion_tokens):
            self.total_tokens = self.prompt_tokens + self.completion_tokens  # type: ignore[operator]


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


class Provider(Protocol):
    """A wire format: request building, event parsing and error classification."""

    name: ClassVar[str]

    def build_request(
        self,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> HttpRequest: ...

    def decoder(self) -> Decoder: ...

    def handle_event(self, payload: bytes, resp: Response, t: float) -> None:
        """Apply one streamed event to `resp`; raise RequestError for an error event."""

    def parse_body(self, body: bytes, resp: Response, t: float) -> None:
        """Apply a whole non-streamed response body to `resp`."""

    def is_complete(self, resp: Response) -> bool:
        """True once the format's terminal marker has been seen."""

    def error_for_status(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> RequestError: ...


def error_type_for_status(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status >= 500 or status == 409:
        return "server"
    return "invalid_request"


def status_error(status: int, headers: Mapping[str, str], body: bytes) -> RequestError:
    """The RequestError for a non-2xx response, shared by the JSON-over-HTTP formats."""
    retryable = is_retryable_status(status)
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    message = f"HTTP {status}: {error_message(body)}"
    return RequestError(
        error_type_for_status(status),
        message,
        http_status=status,
        retryable=retryable,
        retry_after_s=parse_retry_after(headers) if retryable else None,
    )


def error_message(body: bytes) -> str:
    """A short, human message from an error body: JSON error fields, an HTML title, or text."""
    stripped = body.strip()
    if stripped[:1] in (b"{", b"["):
        try:
            data = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            data = None
        message = _json_message(data)
        if message:
            return _shorten(message)
    if stripped[:1] == b"<":
        match = _TITLE_RE.search(stripped)
        text = match.group(1) if match else _TAG_RE.sub(b" ", stripped)
        return _shorten("HTML error page: " + text.decode("utf-8", "replace"))
    return _shorten(stripped.decode("utf-8", "replace")) or "(empty body)"


def _json_message(data: Any) -> str | None:
    if isinstance(data, list) and data:
        return _json_message(data[0])
    if not isinstance(data, dict):
        return None
    for key in ("error", "message", "detail", "title"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            found = _json_message(value)
            if found:
                return found
    return None


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_MESSAGE else text[: MAX_ERROR_MESSAGE - 1] + "…"


def stream_error(payload: Any) -> RequestError:
    """An `{"error": ...}` object met inside a 2xx stream."""
    error = payload.get("error")
    message = _json_message(payload) or "error event in stream"
    status = None
    if isinstance(error, dict):
        for key in ("code", "status", "status_code"):
            value = error.get(key)
            if isinstance(value, int) and 400 <= value < 600:
                status = value
                break
        kind = str(error.get("type") or error.get("code") or "")
        if status is None and "rate" in kind.lower():
            status = 429
    if status is None:
        return RequestError("server", f"error in stream: {_shorten(message)}", retryable=True)
    return RequestError(
        error_type_for_status(status),
        f"error in stream (code {status}): {_shorten(message)}",
        retryable=is_retryable_status(status),
    )


def decode_json(payload: bytes) -> Any:
    """Parse a JSON event; malformed JSON is a retryable protocol error."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        snippet = _shorten(payload[:80].decode("utf-8", "replace"))
        raise RequestError("protocol", f"malformed JSON event: {snippet}", retryable=True) from None
