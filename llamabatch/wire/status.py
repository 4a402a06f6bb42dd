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


# Error `type` / `code` values that say the request itself is wrong, as servers send them:
# OpenAI and llama.cpp `invalid_request_error`, vLLM's exception names, TGI's `validation`.
_INVALID_KINDS: Final = frozenset(
    {
        "invalid_request_error",
        "invalid_request",
        "badrequesterror",
        "unprocessableentityerror",
        "validation",
        "validation_error",
    }
)
_CONTEXT_KINDS: Final = frozenset({"context_length_exceeded", "exceed_context_size_error"})
# What their messages say when the type does not: OpenAI, vLLM and llama-cpp-python ("maximum
# context length is"), llama.cpp ("exceeds the available context size"), vLLM ("longer than
# the maximum model length"), TGI ("must have less than 4096 tokens").
_CONTEXT_RE: Final = re.compile(
    r"maximum context length|context (?:length|window|size) (?:exceeded|of \d)"
    r"|exceeds? (?:the )?(?:available |model's )?context|maximum model length"
    r"|must have less than \d+ tokens|`max_new_tokens` must be <=",
    re.IGNORECASE,
)
# llama-cpp-python answers a request its schema rejects (an unknown role, a string
# temperature) with a 500 "N validation errors"; chat templates reject roles by message.
_INVALID_RE: Final = re.compile(
    r"validation errors?\b|unknown role|invalid role|roles must alternate", re.IGNORECASE
)
_PERMANENT_STATUSES: Final = frozenset({401, 403, 404})


def request_fault(data: Any, text: str) -> str | None:
    """`context_length` or `invalid_request` when an error body says the request itself is wrong.

    `data` is the parsed body (or None), `text` its message.
    """
    parts = [data] if isinstance(data, dict) else []
    if parts and isinstance(data.get("error"), dict):
        parts.append(data["error"])
    kinds = {
        str(part[key]).lower()
        for part in parts
        for key in ("type", "code", "error_type")
        if isinstance(part.get(key), str)
    }
    if kinds & _CONTEXT_KINDS or _CONTEXT_RE.search(text):
        return "context_length"
    if kinds & _INVALID_KINDS or _INVALID_RE.search(text):
        return "invalid_request"
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict) and "loc" in detail[0]:
        return "invalid_request"  # FastAPI's request validation errors
    return None


def status_error(status: int, headers: Mapping[str, str], body: bytes) -> RequestError:
    """The RequestError for a non-2xx response, shared by the JSON-over-HTTP formats.

    The body can overrule the status: a 400 or a 5xx whose body says the request
    itself is invalid (too long, a bad role, a failed validation) is final at
    once, whatever the status says, since sending it again cannot help.
    """
    data = _parse_json(body)
    text = error_message(body, data)
    error_type = error_type_for_status(status)
    fault = request_fault(data, text) if error_type in ("invalid_request", "server") else None
    if fault is not None:
        return RequestError(fault, f"HTTP {status}: {text}", http_status=status)
    retryable = is_retryable_status(status)
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    return RequestError(
        error_type,
        f"HTTP {status}: {text}",
        http_status=status,
        retryable=retryable,
        retry_after_s=parse_retry_after(headers) if retryable else None,
        stops_model=status in _PERMANENT_STATUSES,
    )


def _parse_json(body: bytes) -> Any:
    stripped = body.strip()
    if stripped[:1] not in (b"{", b"["):
        return None
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None


def error_message(body: bytes, data: Any = None) -> str:
    """A short, human message from an error body: JSON error fields, an HTML title, or text.

    `data` is the body already parsed as JSON, when it was.
    """
    stripped = body.strip()
    message = _json_message(_parse_json(body) if data is None else data)
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
    error_type = "server" if status is None else error_type_for_status(status)
    where = "error in stream" if status is None else f"error in stream (code {status})"
    fault = request_fault(payload, message) if error_type in ("invalid_request", "server") else None
    if fault is not None:
        return RequestError(fault, f"{where}: {_shorten(message)}")
    return RequestError(
        error_type,
        f"{where}: {_shorten(message)}",
        retryable=status is None or is_retryable_status(status),
        stops_model=status in _PERMANENT_STATUSES,
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
