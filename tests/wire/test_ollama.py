"""Ollama's native /api/chat: requests, NDJSON lines, counts, timings; checked by its SDK."""

from __future__ import annotations

import json

import orjson
import pytest
from ollama import ChatResponse

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire import Response, provider_for

P = provider_for("ollama")
MODEL = ModelConfig(
    name="m", provider="ollama", model="llama3.3:70b", base_url="http://localhost:11434"
)
MESSAGES = [{"role": "user", "content": "hi"}]


def line(content: str = "", done: bool = False, **fields: object) -> dict[str, object]:
    return {
        "model": "llama3.3:70b",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
        **fields,
    }


FINAL = line(
    done=True,
    done_reason="stop",
    total_duration=2_000_000_000,
    load_duration=5_000_000,
    prompt_eval_count=26,
    prompt_eval_duration=130_000_000,
    eval_count=2,
    eval_duration=1_500_000_000,
)


def feed(*payloads: object) -> Response:
    resp = Response()
    for i, payload in enumerate(payloads):
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        P.handle_event(raw, resp, 1.0 + i)
    return resp


def test_fixtures_are_valid_sdk_responses() -> None:
    for payload in (line("Hi"), FINAL):
        ChatResponse.model_validate(payload)


def test_golden_request_body() -> None:
    params = {
        "max_tokens": 32,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 20,
        "seed": 7,
        "stop": ["\n\n"],
        "repetition_penalty": 1.1,
        "num_ctx": 8192,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "keep_alive": "5m",
    }
    req = P.build_request(MODEL, MESSAGES, params, None)
    assert req.url == "http://localhost:11434/api/chat" and req.stream
    assert "Authorization" not in req.headers
    assert json.loads(req.body) == {
        "model": "llama3.3:70b",
        "messages": MESSAGES,
        "stream": True,
        "format": "json",
        "tools": params["tools"],
        "keep_alive": "5m",
        "options": {
            "num_predict": 32,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 20,
            "seed": 7,
            "stop": ["\n\n"],
            "repeat_penalty": 1.1,
            "num_ctx": 8192,
        },
    }


def test_json_schema_response_format_becomes_the_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = json.loads(P.build_request(MODEL, MESSAGES, {"response_format": rf}, None).body)
    assert body["format"] == schema and "options" not in body


def test_non_streaming_request() -> None:
    model = ModelConfig(name="m", provider="ollama", model="x", base_url="http://h", stream=False)
    body = json.loads(P.build_request(model, MESSAGES, {}, "k").body)
    assert body["stream"] is False


def test_stream_counts_and_nanosecond_timings() -> None:
    resp = feed(line(""), line("Hel"), line("lo"), FINAL)
    assert resp.text == "Hello" and resp.finish_reason == "stop" and P.is_complete(resp)
    assert resp.first_token_t == 2.0 and resp.token_chunks == 2
    assert (resp.prompt_tokens, resp.completion_tokens, resp.total_tokens) == (26, 2, 28)
    extras = resp.extra_columns()
    assert extras["server_prompt_s"] == pytest.approx(0.13)
    assert extras["server_decode_s"] == pytest.approx(1.5)
    assert extras["server_load_s"] == pytest.approx(0.005)


@pytest.mark.parametrize("missing", ["prompt_eval_count", "eval_count"])
def test_a_missing_count_is_unknown_not_an_error(missing: str) -> None:
    final = {k: v for k, v in FINAL.items() if k != missing}
    resp = feed(line("Hi"), final)
    assert P.is_complete(resp) and resp.total_tokens is None
    assert (resp.prompt_tokens is None) == (missing == "prompt_eval_count")
    assert (resp.completion_tokens is None) == (missing == "eval_count")


def test_no_counts_at_all() -> None:
    final = {k: v for k, v in FINAL.items() if "count" not in k and "duration" not in k}
    resp = feed(line("Hi"), final)
    assert P.is_complete(resp) and resp.completion_tokens is None
    assert resp.extra_columns()["server_decode_s"] is None


def test_error_line_under_status_200_is_an_error() -> None:
    with pytest.raises(RequestError) as info:
        feed(line("partial"), {"error": "an error was encountered while running the model"})
    assert info.value.error_type == "server" and info.value.retryable
    assert "running the model" in info.value.message


def test_stream_without_done_is_truncated() -> None:
    assert not P.is_complete(feed(line("Hel"), line("lo")))


def test_thinking_and_tool_calls() -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Lima"}}}
    resp = feed(
        {**line(), "message": {"role": "assistant", "content": "", "thinking": "hmm"}},
        {**line(), "message": {"role": "assistant", "content": "", "tool_calls": [call]}},
        FINAL,
    )
    ChatResponse.model_validate({**line(), "message": {"role": "assistant", "tool_calls": [call]}})
    assert resp.first_token_t == 1.0
    extras = resp.extra_columns()
    assert extras["reasoning_text"] == "hmm"
    (got,) = json.loads(extras["tool_calls"])
    assert got["function"] == {"name": "get_weather", "arguments": '{"city":"Lima"}'}


def test_whole_body_and_404_model_not_found() -> None:
    resp = Response()
    P.parse_body(
        orjson.dumps({**FINAL, "message": {"role": "assistant", "content": "Hi"}}), resp, 1
    )
    assert resp.text == "Hi" and resp.completion_tokens == 2
    err = P.error_for_status(
        404, {}, b'{"error": "model \\"llama9\\" not found, try pulling it first"}'
    )
    assert err.error_type == "not_found" and "try pulling it first" in err.message
