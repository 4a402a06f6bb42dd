"""OpenAI-compatible `/chat/completions` (Meta's compat endpoint, vLLM, llama.cpp, TGI, ...).

Quirks of the servers that speak it, all handled here:
reasoning in `reasoning_content` or `reasoning`; tool calls in pieces merged by
index; Mistral's `content` as a list of chunks; TGI's plain-string errors;
llama.cpp's `timings` on the last chunk; vLLM's usage on every chunk; Groq's
usage under `x_groq`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from llamabatch.config.schema import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire.provider import Provider
from llamabatch.wire.request import HttpRequest, json_post, merge_extra, split_extra
from llamabatch.wire.response import (
    ANSWER,
    REASONING,
    Response,
    content_parts,
    number_or_none,
)
from llamabatch.wire.status import decode_json, stream_error

_DONE = b"[DONE]"


class OpenAIProvider(Provider):
    """Chat completions, streamed as SSE with `stream_options.include_usage`."""

    name: ClassVar[str] = "openai"

    def build_request(
        self,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> HttpRequest:
        params, extra = split_extra(params)
        body: dict[str, Any] = {"model": model.model, "messages": messages, **params}
        if model.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return json_post(
            model, "/chat/completions", merge_extra(body, extra), api_key, sse=model.stream
        )

    def handle_batch(self, payloads: list[bytes], times: list[float], resp: Response) -> None:
        """Parse a whole stream's events with one JSON call; plain text deltas take a fast path."""
        if _DONE in payloads:
            resp.done = True
            if payloads[-1] == _DONE and payloads.count(_DONE) == 1:  # where it belongs
                payloads, times = payloads[:-1], times[:-1]
            else:
                kept = [i for i, p in enumerate(payloads) if p != _DONE]
                payloads, times = [payloads[i] for i in kept], [times[i] for i in kept]
        try:
            events = orjson.loads(b"[" + b",".join(payloads) + b"]")
        except orjson.JSONDecodeError:
            events = [decode_json(p) for p in payloads]  # raises for the bad one
        text = resp.text_parts
        chunks = resp.chunks  # None unless raw chunk times are kept
        first = last = None
        count = 0
        for event, t in zip(events, times, strict=True):
            # The common event — one choice whose delta holds only text — costs a few
            # lookups; anything else (usage, reasoning, tools, finish, errors) goes the long way.
            try:
                choice = event["choices"][0]
                delta = choice["delta"]
                content = delta["content"]
                plain = (
                    content.__class__ is str
                    and choice["finish_reason"] is None
                    and (len(delta) == 1 or (len(delta) == 2 and "role" in delta))
                    and "usage" not in event
                    and "timings" not in event
                    and "x_groq" not in event
                )
            except (KeyError, IndexError, TypeError):
                plain = False
            if not plain:
                self._handle_object(event, resp, t)
            elif content:
                text.append(content)
                count += 1
                last = t
                if first is None:
                    first = t
                if chunks is not None:
                    chunks.append((t, _logprob_tokens(choice)))
        if count:
            resp.mark_many(first, last, count)  # type: ignore[arg-type]

    def handle_event(self, payload: bytes, resp: Response, t: float) -> None:
        if payload == _DONE:
            resp.done = True
            return
        self._handle_object(decode_json(payload), resp, t)

    def _handle_object(self, event: Any, resp: Response, t: float) -> None:
        if not isinstance(event, dict):
            raise RequestError("protocol", "stream event is not a JSON object", retryable=True)
        choices = event.get("choices")
        if choices is None and "error" in event:
            raise stream_error(event)
        if choices:
            choice = choices[0]
            carried = _apply_message(choice.get("delta") or {}, resp)
            if carried:
                tokens = _chunk_tokens(choice, event, resp) if resp.chunks is not None else None
                resp.mark(t, answer=carried == ANSWER, tokens=tokens)
            finish = choice.get("finish_reason")
            if finish:
                resp.finish_reason = finish
        _apply_usage(event, resp)

    def parse_body(self, body: bytes, resp: Response, t: float) -> None:
        data = decode_json(body)
        if not isinstance(data, dict):
            raise RequestError("protocol", "response is not a JSON object", retryable=True)
        choices = data.get("choices")
        if not choices:
            if "error" in data:
                raise stream_error(data)
            raise RequestError("protocol", "response has no choices", retryable=True)
        _apply_message(choices[0].get("message") or {}, resp)
        resp.finish_reason = choices[0].get("finish_reason")
        _apply_usage(data, resp)
        resp.done = True


def _apply_message(message: Mapping[str, Any], resp: Response) -> str | None:
    """Add a delta's (or a whole message's) text, reasoning and tool calls.

    Returns what it carried: ANSWER (text or tool calls), REASONING (only that) or None.
    """
    text, reasoning = content_parts(message.get("content"))
    extra_reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(extra_reasoning, str):
        reasoning += extra_reasoning
    if text:
        resp.text_parts.append(text)
    if reasoning:
        resp.reasoning_parts.append(reasoning)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for position, call in enumerate(calls):
            if isinstance(call, dict):
                _add_tool_call(call, position, resp)
    if text or calls:
        return ANSWER
    return REASONING if reasoning else None


def _logprob_tokens(choice: Mapping[str, Any]) -> int | None:
    """Tokens in a chunk, from its logprobs (one entry per token), when it has them."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return len(content) if isinstance(content, list) and content else None


def _chunk_tokens(
    choice: Mapping[str, Any], event: Mapping[str, Any], resp: Response
) -> int | None:
    """Tokens in a chunk: from logprobs, or the growth of a usage count sent with every chunk.

    (vLLM sends cumulative usage on every chunk with `continuous_usage_stats`.)
    """
    tokens = _logprob_tokens(choice)
    usage = event.get("usage")
    if tokens is None and isinstance(usage, dict):
        count = usage.get("completion_tokens")
        if isinstance(count, int) and not isinstance(count, bool):
            tokens = count - (resp.completion_tokens or 0)
    return tokens


def _add_tool_call(call: Mapping[str, Any], position: int, resp: Response) -> None:
    function = call.get("function") or {}
    index = call.get("index")
    key: int | str = index if isinstance(index, int) else (call.get("id") or position)
    resp.add_tool_call(key, call.get("id"), function.get("name"), function.get("arguments"))


def _apply_usage(event: Mapping[str, Any], resp: Response) -> None:
    """Usage (the last one seen wins: vLLM repeats it on every chunk), or llama.cpp timings."""
    usage = event.get("usage") or (event.get("x_groq") or {}).get("usage")
    if isinstance(usage, dict):
        resp.set_usage(
            usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens")
        )
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict) and details.get("reasoning_tokens") is not None:
            resp.set_reasoning_tokens(details["reasoning_tokens"])
    timings = event.get("timings")
    if isinstance(timings, dict):
        resp.server_prompt_s = number_or_none(timings.get("prompt_ms"), 1e-3)
        resp.server_decode_s = number_or_none(timings.get("predicted_ms"), 1e-3)
        if resp.completion_tokens is None and isinstance(timings.get("predicted_n"), int):
            # llama.cpp counts prompt tokens served from its cache apart (`cache_n`).
            prompt = timings.get("prompt_n")
            if isinstance(prompt, int):
                prompt += timings.get("cache_n") or 0
            resp.set_usage(prompt, timings["predicted_n"], None)
