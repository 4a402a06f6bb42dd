"""Meta Llama API, native format (`https://api.llama.com/v1/chat/completions`).

Requests take `max_completion_tokens`; responses carry `completion_message`
and a `metrics` list. Streams are SSE events `{"event": {"event_type": ...}}`
(`start`, `progress`, `complete`, `metrics`) with no `[DONE]`; an error may
arrive mid-stream as a bare JSON line without `data:`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from llamabatch.config.schema import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire.provider import Provider
from llamabatch.wire.request import HttpRequest, json_post, merge_extra, split_extra
from llamabatch.wire.response import ANSWER, REASONING, Response, content_parts
from llamabatch.wire.status import decode_json, stream_error

# Parameters whose name differs from the OpenAI spelling users write in configs.
RENAMED: Final = {"max_tokens": "max_completion_tokens"}
_EVENT_TYPES: Final = frozenset({"start", "progress", "complete", "metrics"})


class LlamaProvider(Provider):
    """The Llama API's own wire format."""

    name: ClassVar[str] = "llama"

    def build_request(
        self,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> HttpRequest:
        params, extra = split_extra(params)
        body: dict[str, Any] = {"model": model.model, "messages": messages}
        for key, value in params.items():
            body[RENAMED.get(key, key)] = value
        if model.stream:
            body["stream"] = True
        return json_post(
            model, "/chat/completions", merge_extra(body, extra), api_key, sse=model.stream
        )

    def handle_event(self, payload: bytes, resp: Response, t: float) -> None:
        data = decode_json(payload)
        event = data.get("event") if isinstance(data, dict) else None
        if not isinstance(event, dict) or event.get("event_type") not in _EVENT_TYPES:
            raise _not_an_event(data)
        carried = _apply_delta(event.get("delta"), resp)
        if carried:
            resp.mark(t, answer=carried == ANSWER)
        _apply_metrics(event.get("metrics"), resp)
        kind = event["event_type"]
        # Only `complete` (or the `metrics` after it) ends a response; a truncated
        # stream must not look finished because some event carried a stop_reason.
        if kind in ("complete", "metrics"):
            resp.finish_reason = event.get("stop_reason") or resp.finish_reason or "stop"
        if kind == "metrics":
            resp.done = True

    def parse_body(self, body: bytes, resp: Response, t: float) -> None:
        data = decode_json(body)
        message = data.get("completion_message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            raise _not_an_event(data, "response has no completion_message")
        text, reasoning = content_parts(message.get("content"))
        if text:
            resp.text_parts.append(text)
        if reasoning:
            resp.reasoning_parts.append(reasoning)
        for position, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            resp.add_tool_call(
                position, call.get("id"), function.get("name"), function.get("arguments")
            )
        resp.finish_reason = message.get("stop_reason") or "stop"
        _apply_metrics(data.get("metrics"), resp)
        resp.done = True


def _not_an_event(data: Any, what: str = "not a Llama API stream event") -> RequestError:
    """A JSON object that is not a valid event: an error the server reported, or garbage."""
    if isinstance(data, dict) and data.keys() & {"error", "detail", "title", "message"}:
        return stream_error(data)
    return RequestError("protocol", what, retryable=True)


def _apply_delta(delta: Any, resp: Response) -> str | None:
    """Add a text, reasoning or tool-call delta; returns ANSWER, REASONING or None."""
    if not isinstance(delta, dict):
        return None
    kind = delta.get("type")
    if kind == "text":
        text = delta.get("text")
        if isinstance(text, str) and text:
            resp.text_parts.append(text)
            return ANSWER
    elif kind == "reasoning":
        reasoning = delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            resp.reasoning_parts.append(reasoning)
            return REASONING
    elif kind == "tool_call":
        function = delta.get("function") or {}
        call_id = delta.get("id")
        resp.add_tool_call(
            call_id or None, call_id, function.get("name"), function.get("arguments")
        )
        return ANSWER
    return None


def _apply_metrics(metrics: Any, resp: Response) -> None:
    """Token counts from `[{metric, value, unit}, ...]`, in any order, values possibly floats."""
    if not isinstance(metrics, list):
        return
    values = {
        m.get("metric"): m.get("value") for m in metrics if isinstance(m, dict) and "metric" in m
    }
    if values.keys() & {"num_prompt_tokens", "num_completion_tokens", "num_total_tokens"}:
        resp.set_usage(
            values.get("num_prompt_tokens"),
            values.get("num_completion_tokens"),
            values.get("num_total_tokens"),
        )
