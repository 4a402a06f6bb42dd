"""Classifying a response that failed: error type, retryable or not, Retry-After, a short message.

How a wire response is classified lives here, with the wire formats; the
engine only decides when to try again (`engine/retry.py`).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from llamabatch.errors import RequestError

MAX_ERROR_MESSAGE: Final = 300
RETRYABLE_STATUSES: Final = frozenset({408, 409, 429})
_TITLE_RE: Final = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_RE: Final = re.compile(rb"<[^>]+>")


def is_retryable_status(status: int) -> bool:
    """408, 409, 429 and every 5xx are worth another try; other statuses are final."""
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


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


# TGI's `error_type` for errors it reports as `{"error": "...", "error_type": ...}`.
_TGI_ERROR_STATUS: Final = {"validation": 422, "overloaded": 429, "generation": 500}


def stream_error(payload: Any) -> RequestError:
    """An `{"error": ...}` object met inside a 2xx stream."""
    error = payload.get("error")
    message = _json_message(payload) or "error event in stream"
    status = _TGI_ERROR_STATUS.get(str(payload.get("error_type")))
    # The status may sit in the error object or beside it (`{"detail": ..., "status": 400}`).
    for source in (error, payload) if isinstance(error, dict) else (payload,):
        status = _status_in(source) or status
        if status is not None:
            break
    if isinstance(error, dict):
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


def _status_in(data: Mapping[str, Any]) -> int | None:
    for key in ("code", "status", "status_code"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
            return value
    return None


def decode_json(payload: bytes) -> Any:
    """Parse a JSON event; malformed JSON is a retryable protocol error."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        snippet = _shorten(payload[:80].decode("utf-8", "replace"))
        raise RequestError("protocol", f"malformed JSON event: {snippet}", retryable=True) from None
