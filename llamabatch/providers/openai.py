"""OpenAI-compatible `/chat/completions` (Meta's compat endpoint, vLLM, llama.cpp, TGI, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.providers.base import (
    HttpRequest,
    Response,
    decode_json,
    status_error,
    stream_error,
)
from llamabatch.sse import SSEDecoder

_DONE = b"[DONE]"


class OpenAIProvider:
    """Chat completions, streamed as SSE with `stream_options.include_usage`."""

    name: ClassVar[str] = "openai"

    def build_request(
        self,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> HttpRequest:
        body: dict[str, Any] = {"model": model.model, "messages": messages, **params}
        headers = {"Content-Type": "application/json", **model.headers}
        if model.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            headers["Accept"] = "text/event-stream"
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        assert model.base_url is not None
        return HttpRequest(
            url=f"{model.base_url}/chat/completions",
            headers=headers,
            body=orjson.dumps(body),
            stream=model.stream,
        )

    def decoder(self) -> SSEDecoder:
        return SSEDecoder()

    def handle_event(self, payload: bytes, resp: Response, t: float) -> None:
        if payload == _DONE:
            resp.done = True
            return
        event = decode_json(payload)
        if not isinstance(event, dict):
            raise RequestError("protocol", "stream event is not a JSON object", retryable=True)
        choices = event.get("choices")
        if choices is None and "error" in event:
            raise stream_error(event)
        if choices:
            choice = choices[0]
            delta = choice.get("delta") or {}
            content = delta.get("content")
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if content:
                resp.text_parts.append(content)
            if reasoning:
                resp.reasoning_parts.append(reasoning)
            if content or reasoning or delta.get("tool_calls"):
                resp.mark(t)
            finish = choice.get("finish_reason")
            if finish:
                resp.finish_reason = finish
        usage = event.get("usage")
        if usage:
            resp.set_usage(
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                usage.get("total_tokens"),
            )

    def parse_body(self, body: bytes, resp: Response, t: float) -> None:
        data = decode_json(body)
        if not isinstance(data, dict):
            raise RequestError("protocol", "response is not a JSON object", retryable=True)
        choices = data.get("choices")
        if not choices:
            if "error" in data:
                raise stream_error(data)
            raise RequestError("protocol", "response has no choices", retryable=True)
        message = choices[0].get("message") or {}
        content = message.get("content")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if content:
            resp.text_parts.append(content)
        if reasoning:
            resp.reasoning_parts.append(reasoning)
        resp.mark(t)
        resp.finish_reason = choices[0].get("finish_reason")
        usage = data.get("usage") or {}
        resp.set_usage(
            usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens")
        )
        resp.done = True

    def is_complete(self, resp: Response) -> bool:
        return resp.done or resp.finish_reason is not None

    def error_for_status(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> RequestError:
        return status_error(status, headers, body)
