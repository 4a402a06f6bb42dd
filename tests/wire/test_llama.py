"""Meta's native Llama API format: requests, events, errors; fixtures checked against the SDK."""

from __future__ import annotations

import json

import orjson
import pytest
from llama_api_client.types import (
    CreateChatCompletionResponse,
    CreateChatCompletionResponseStreamChunk,
)

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire import Response, provider_for
from llamabatch.wire.sse import SSEDecoder

P = provider_for("llama")
MODEL = ModelConfig(
    name="m", provider="llama", model="Llama-4-Scout-17B-16E-Instruct-FP8", base_url="http://h/v1"
)
MESSAGES = [{"role": "user", "content": "hi"}]


def event(kind: str, delta: dict[str, object] | None = None, **fields: object) -> dict[str, object]:
    return {
        "id": "r1",
        "event": {"event_type": kind, "delta": delta or {"type": "text", "text": ""}, **fields},
    }


def text(t: str) -> dict[str, object]:
    return {"type": "text", "text": t}


METRICS = [
    {"metric": "num_total_tokens", "value": 13.0, "unit": "tokens"},
    {"metric": "num_completion_tokens", "value": 3.0},
    {"metric": "num_prompt_tokens", "value": 10.0, "unit": "tokens"},
]
STREAM = [
    event("start", text("")),
    event("progress", text("Hel")),
    event("progress", text("lo")),
    event("complete", text(""), stop_reason="stop"),
    event("metrics", text(""), metrics=METRICS),
]


def feed(*payloads: object) -> Response:
    resp = Response()
    for i, payload in enumerate(payloads):
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        P.handle_event(raw, resp, 1.0 + i)
    return resp


def test_fixtures_are_valid_sdk_stream_chunks() -> None:
    for payload in STREAM:
        CreateChatCompletionResponseStreamChunk.model_validate(payload)


def test_golden_request_body() -> None:
    params = {
        "max_tokens": 64,
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": 40,
        "repetition_penalty": 1.1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    req = P.build_request(MODEL, MESSAGES, params, "key-1")
    assert req.url == "http://h/v1/chat/completions" and req.stream
    assert req.headers["Authorization"] == "Bearer key-1"
    assert json.loads(req.body) == {
        "model": "Llama-4-Scout-17B-16E-Instruct-FP8",
        "messages": MESSAGES,
        "max_completion_tokens": 64,
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": 40,
        "repetition_penalty": 1.1,
        "response_format": params["response_format"],
        "tools": params["tools"],
        "stream": True,
    }


def test_stream_parses_text_stop_reason_and_metrics() -> None:
    resp = feed(*STREAM)
    assert resp.text == "Hello" and resp.finish_reason == "stop"
    assert (resp.prompt_tokens, resp.completion_tokens, resp.total_tokens) == (10, 3, 13)
    assert resp.first_token_t == 2.0 and resp.token_chunks == 2
    assert resp.done and P.is_complete(resp)


def test_metrics_inside_the_complete_event_also_count() -> None:
    resp = feed(
        event("progress", text("x")), event("complete", stop_reason="length", metrics=METRICS)
    )
    assert resp.finish_reason == "length" and resp.completion_tokens == 3 and P.is_complete(resp)


def test_stream_without_complete_is_truncated() -> None:
    resp = feed(*STREAM[:3])
    assert not P.is_complete(resp)


def test_streamed_tool_call_deltas_are_merged() -> None:
    def call(**fields: object) -> dict[str, object]:
        return event("progress", {"type": "tool_call", **fields})

    payloads = [
        call(id="t1", function={"name": "weather", "arguments": ""}),
        call(function={"arguments": '{"city": '}),
        call(id="t1", function={"arguments": '"Oslo"}'}),
        call(id="t2", function={"name": "time", "arguments": "{}"}),
        event("complete", stop_reason="tool_calls"),
    ]
    for payload in payloads:
        CreateChatCompletionResponseStreamChunk.model_validate(payload)
    resp = feed(*payloads)
    calls = json.loads(resp.extra_columns()["tool_calls"])
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("t1", "weather", '{"city": "Oslo"}'),
        ("t2", "time", "{}"),
    ]
    assert resp.first_token_t == 1.0 and resp.finish_reason == "tool_calls"


def test_reasoning_delta_is_kept_apart() -> None:
    resp = feed(event("progress", {"type": "reasoning", "reasoning": "hmm"}), *STREAM[1:])
    assert resp.first_token_t == 1.0 and resp.extra_columns()["reasoning_text"] == "hmm"
    assert resp.text == "Hello"


def test_bare_json_error_line_mid_stream_is_an_error_not_output() -> None:
    stream = (
        b"data: " + orjson.dumps(STREAM[1]) + b"\n\n"
        b'{"error": {"message": "internal error", "code": 500}}\n'
    )
    decoder = SSEDecoder()
    payloads = decoder.feed(stream) + decoder.close()
    resp = Response()
    P.handle_event(payloads[0], resp, 1.0)
    with pytest.raises(RequestError) as info:
        P.handle_event(payloads[1], resp, 2.0)
    assert info.value.error_type == "server" and info.value.retryable
    assert "internal error" in info.value.message


def test_error_in_detail_form_with_a_client_status() -> None:
    with pytest.raises(RequestError) as info:
        feed({"title": "Bad request", "detail": "max_completion_tokens too large", "status": 400})
    assert info.value.error_type == "invalid_request" and not info.value.retryable


def test_unknown_json_is_a_protocol_error() -> None:
    with pytest.raises(RequestError) as info:
        feed({"something": "else"})
    assert info.value.error_type == "protocol"


@pytest.mark.parametrize(
    "content", [{"type": "text", "text": "Paris.<|eot_id|>"}, "Paris.<|eot_id|>"]
)
def test_non_streamed_body(content: object) -> None:
    body = {
        "id": "r",
        "completion_message": {
            "role": "assistant",
            "content": content,
            "stop_reason": "stop",
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
        },
        "metrics": METRICS,
    }
    CreateChatCompletionResponse.model_validate(body)
    resp = Response()
    P.parse_body(orjson.dumps(body), resp, 1.0)
    assert resp.text == "Paris." and resp.completion_tokens == 3 and P.is_complete(resp)
    assert json.loads(resp.extra_columns()["tool_calls"])[0]["function"]["name"] == "f"
