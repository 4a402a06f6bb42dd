"""What every wire format provides, and the response state they fill in.

Providers are pure: they build requests, turn bytes into `Response` updates
and classify errors. `transport.py` is the only module that does HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import orjson

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.retry import is_retryable_status, parse_retry_after

MAX_ERROR_MESSAGE = 300
_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(rb"<[^>]+>")


# End-of-turn markers some servers leave at the end of the text (Llama 3, Gemma, ChatML, ...).
STOP_TOKENS: Final = (
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<eos>",
    "</s>",
)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A fully built request: what goes on the wire, nothing else."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    stream: bool
    method: str = "POST"


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[bytes]: ...

    def close(self) -> list[bytes]: ...


class Response:
    """The state of one attempt's response, filled in as events arrive."""

    __slots__ = (
        "_tool_keys",
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
        "server_decode_s",
        "server_load_s",
        "server_prompt_s",
        "started_t",
        "text_parts",
        "token_chunks",
        "tool_calls",
        "total_tokens",
        "usage_source",
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
        self.tool_calls: list[dict[str, Any]] = []
        self._tool_keys: dict[int | str, dict[str, Any]] = {}
        self.server_prompt_s: float | None = None
        self.server_decode_s: float | None = None
        self.server_load_s: float | None = None
        self.usage_source: str | None = None

    def mark(self, t: float) -> None:
        """Record that a chunk carrying generated output arrived at `t`."""
        if self.first_token_t is None:
            self.first_token_t = t
        self.last_token_t = t
        self.token_chunks += 1

    def mark_many(self, first: float, last: float, count: int) -> None:
        """Record `count` output-carrying chunks that arrived from `first` to `last`."""
        if self.first_token_t is None or first < self.first_token_t:
            self.first_token_t = first
        if self.last_token_t is None or last > self.last_token_t:
            self.last_token_t = last
        self.token_chunks += count

    @property
    def text(self) -> str:
        """The answer, without end-of-turn markers a server left at its end."""
        return strip_stop_tokens("".join(self.text_parts))

    def add_tool_call(self, key: int | str | None, call_id: Any, name: Any, arguments: Any) -> None:
        """Merge one tool-call piece; pieces with the same `key` (index or id) are one call.

        A piece without a key continues the latest call. Arguments arrive as
        string fragments (appended) or, from some servers, as a whole object.
        """
        call = self._tool_keys.get(key) if key is not None else None
        if call is None and key is None and self.tool_calls:
            call = self.tool_calls[-1]
        if call is None:
            call = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            self.tool_calls.append(call)
            if key is not None:
                self._tool_keys[key] = call
        function = call["function"]
        if call_id and not call["id"]:
            call["id"] = str(call_id)
        if name and not function["name"]:
            function["name"] = str(name)
        if isinstance(arguments, str):
            function["arguments"] += arguments
        elif arguments is not None:
            function["arguments"] = orjson.dumps(arguments).decode()

    def extra_columns(self) -> dict[str, Any]:
        """Result columns only some endpoints fill: reasoning, tool calls, server timings."""
        return {
            "reasoning_text": "".join(self.reasoning_parts) or None,
            "tool_calls": orjson.dumps(self.tool_calls).decode() if self.tool_calls else None,
            "server_prompt_s": self.server_prompt_s,
            "server_decode_s": self.server_decode_s,
            "server_load_s": self.server_load_s,
        }

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


def number_or_none(value: Any, scale: float = 1.0) -> float | None:
    """`value * scale` for a JSON number, None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) * scale


def strip_stop_tokens(text: str) -> str:
    """Drop end-of-turn markers (`<|eot_id|>`, ...) that a server left at the end of `text`."""
    while text.endswith(STOP_TOKENS):
        token = next(t for t in STOP_TOKENS if text.endswith(t))
        text = text[: -len(token)]
    return text


def content_parts(content: Any) -> tuple[str, str]:
    """(text, reasoning) of a message `content`: a string, `{type, text}`, or a list of chunks.

    Mistral sends lists of `{"type": "text", "text": ...}` and
    `{"type": "thinking", "thinking": [...]}` chunks; Meta's native API a
    single `{"type": "text", "text": ...}` object.
    """
    if isinstance(content, str):
        return content, ""
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return "", ""
    text: list[str] = []
    reasoning: list[str] = []
    for chunk in content:
        if isinstance(chunk, str):
            text.append(chunk)
        elif isinstance(chunk, dict):
            kind = chunk.get("type")
            if kind in ("thinking", "reasoning"):
                inner = chunk.get(kind)
                reasoning.append(inner if isinstance(inner, str) else content_parts(inner)[0])
            elif isinstance(chunk.get("text"), str):
                text.append(chunk["text"])
    return "".join(text), "".join(reasoning)


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

    def handle_batch(self, payloads: list[bytes], times: list[float], resp: Response) -> None:
        """Apply events in order, `times[i]` being when `payloads[i]` arrived."""

    def parse_body(self, body: bytes, resp: Response, t: float) -> None:
        """Apply a whole non-streamed response body to `resp`."""

    def is_complete(self, resp: Response) -> bool:
        """True once the format's terminal marker has been seen."""

    def error_for_status(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> RequestError: ...


def json_post(
    model: ModelConfig, path: str, body: Mapping[str, Any], api_key: str | None, *, sse: bool
) -> HttpRequest:
    """A JSON POST to `<base_url><path>`, bearer-authenticated, asking for SSE when `sse`."""
    headers = {"Content-Type": "application/json", **model.headers}
    if sse:
        headers["Accept"] = "text/event-stream"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    assert model.base_url is not None
    return HttpRequest(
        url=f"{model.base_url}{path}",
        headers=headers,
        body=orjson.dumps(body),
        stream=model.stream,
    )


def handle_each(
    provider: Provider, payloads: list[bytes], times: list[float], resp: Response
) -> None:
    """`handle_batch` for formats with nothing faster than one event at a time."""
    for payload, t in zip(payloads, times, strict=True):
        provider.handle_event(payload, resp, t)


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
