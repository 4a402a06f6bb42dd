"""Ollama's native `/api/chat` (base URL: the server root, `http://localhost:11434`).

Streams are NDJSON; the last line has `done: true`, `done_reason`, token
counts (`prompt_eval_count`, `eval_count`, either may be missing) and
server-side durations in nanoseconds. An `{"error": ...}` line is an error
even under status 200.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from llamabatch.config.schema import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire.provider import Provider
from llamabatch.wire.request import HttpRequest, json_post, merge_extra, split_extra
from llamabatch.wire.response import ANSWER, REASONING, Response, number_or_none
from llamabatch.wire.sse import NDJSONDecoder
from llamabatch.wire.status import decode_json, stream_error

# Request fields that stay at the top level; every other parameter goes into `options`.
TOP_LEVEL: Final = frozenset({"tools", "format", "keep_alive", "think", "logprobs", "top_logprobs"})
# OpenAI-style parameter names users write in configs -> Ollama's option names.
RENAMED: Final = {"max_tokens": "num_predict", "repetition_penalty": "repeat_penalty"}
_NS: Final = 1e-9


class OllamaProvider(Provider):
    """Ollama's own chat API."""

    name: ClassVar[str] = "ollama"

    def build_request(
        self,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> HttpRequest:
        params, extra = split_extra(params)
        body: dict[str, Any] = {"model": model.model, "messages": messages, "stream": model.stream}
        options: dict[str, Any] = {}
        for key, value in params.items():
            if key == "response_format":
                body["format"] = _format(value)
            elif key in TOP_LEVEL:
                body[key] = value
            elif key == "stop" and isinstance(value, str):
                options["stop"] = [value]  # Ollama's options.stop is a list
            else:
                options[RENAMED.get(key, key)] = value
        if options:
            body["options"] = options
        return json_post(model, "/api/chat", merge_extra(body, extra), api_key, sse=False)

    def decoder(self) -> NDJSONDecoder:
        return NDJSONDecoder()

    def handle_event(self, payload: bytes, resp: Response, t: float) -> None:
        line = decode_json(payload)
        if not isinstance(line, dict):
            raise RequestError("protocol", "stream line is not a JSON object", retryable=True)
        if "error" in line:
            raise stream_error(line)
        carried = _apply_message(line.get("message"), resp)
        if carried:
            resp.mark(t, answer=carried == ANSWER)
        if line.get("done") is True:
            _apply_final(line, resp)

    def parse_body(self, body: bytes, resp: Response, t: float) -> None:
        data = decode_json(body)
        if not isinstance(data, dict) or "error" in data or data.get("done") is not True:
            if isinstance(data, dict) and "error" in data:
                raise stream_error(data)
            raise RequestError("protocol", "response is not a finished chat reply", retryable=True)
        _apply_message(data.get("message"), resp)
        _apply_final(data, resp)

    def is_complete(self, resp: Response) -> bool:
        return resp.done


def _format(response_format: Any) -> Any:
    """OpenAI's `response_format` as Ollama's `format`: "json" or a JSON schema."""
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            return "json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            return schema
    return response_format


def _apply_message(message: Any, resp: Response) -> str | None:
    """Add a line's text, thinking and tool calls; returns ANSWER, REASONING or None."""
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    thinking = message.get("thinking")
    if isinstance(content, str) and content:
        resp.text_parts.append(content)
    if isinstance(thinking, str) and thinking:
        resp.reasoning_parts.append(thinking)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            if not isinstance(call, dict):
                continue
            function = call.get("function") or {}
            # Ollama sends each call whole, with its arguments as an object.
            resp.add_tool_call(
                len(resp.tool_calls),
                call.get("id"),
                function.get("name"),
                function.get("arguments"),
            )
    if content or calls:
        return ANSWER
    return REASONING if thinking else None


def _apply_final(line: Mapping[str, Any], resp: Response) -> None:
    """Counts and server timings of the `done: true` line; missing counts stay unknown."""
    resp.finish_reason = line.get("done_reason") or "stop"
    if "prompt_eval_count" in line or "eval_count" in line:
        resp.set_usage(line.get("prompt_eval_count"), line.get("eval_count"), None)
    resp.server_prompt_s = number_or_none(line.get("prompt_eval_duration"), _NS)
    resp.server_decode_s = number_or_none(line.get("eval_duration"), _NS)
    resp.server_load_s = number_or_none(line.get("load_duration"), _NS)
    resp.done = True
