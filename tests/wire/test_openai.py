from __future__ import annotations

import json

import orjson
import pytest

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire import Response
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.status import parse_retry_after

P = OpenAIProvider()
MODEL = ModelConfig(name="m", provider="openai", model="Llama-4-Scout", base_url="http://h/v1")


def events(resp: Response, *payloads: object, t0: float = 1.0) -> Response:
    for i, payload in enumerate(payloads):
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        P.handle_event(raw, resp, t0 + i)
    return resp


def chunk(delta: dict[str, object] | None = None, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}


def test_request_body_streams_with_usage_and_merges_params() -> None:
    req = P.build_request(MODEL, [{"role": "user", "content": "hi"}], {"max_tokens": 5}, "sk-1")
    body = json.loads(req.body)
    assert req.url == "http://h/v1/chat/completions"
    assert body == {
        "model": "Llama-4-Scout",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert req.headers["Authorization"] == "Bearer sk-1"


def test_non_streaming_request_has_no_stream_fields() -> None:
    model = ModelConfig(
        name="m", provider="openai", model="x", base_url="http://h/v1", stream=False
    )
    body = json.loads(P.build_request(model, [{"role": "user", "content": "hi"}], {}, None).body)
    assert "stream" not in body and "stream_options" not in body


def test_role_only_and_empty_chunks_do_not_count_as_first_token() -> None:
    resp = events(
        Response(),
        chunk({"role": "assistant"}),
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
        b"[DONE]",
    )
    assert resp.text == "Hello"
    assert resp.first_token_t == 3.0 and resp.last_token_t == 4.0 and resp.token_chunks == 2
    assert (resp.prompt_tokens, resp.completion_tokens, resp.total_tokens) == (3, 2, 5)
    assert resp.finish_reason == "stop" and resp.done and P.is_complete(resp)


def test_finish_reason_without_done_is_complete() -> None:
    resp = events(Response(), chunk({"content": "x"}), chunk({}, "length"))
    assert P.is_complete(resp) and not resp.done


def test_stream_without_terminal_marker_is_incomplete() -> None:
    assert not P.is_complete(events(Response(), chunk({"content": "x"})))


def test_reasoning_counts_for_ttft_but_is_kept_apart() -> None:
    resp = events(Response(), chunk({"reasoning_content": "think"}), chunk({"content": "A"}))
    assert resp.first_token_t == 1.0
    assert resp.text == "A" and resp.reasoning_parts == ["think"]


def test_tool_call_chunk_counts_as_first_token() -> None:
    call = {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ""}}]}
    assert events(Response(), chunk(call)).first_token_t == 1.0


def test_error_object_in_a_200_stream_is_an_error_not_output() -> None:
    resp = events(Response(), chunk({"content": "partial"}))
    with pytest.raises(RequestError) as info:
        P.handle_event(b'{"error": {"message": "overloaded", "code": 503}}', resp, 2.0)
    assert info.value.error_type == "server" and info.value.retryable
    assert "overloaded" in info.value.message


def test_error_in_stream_with_client_code_is_not_retried() -> None:
    with pytest.raises(RequestError) as info:
        P.handle_event(b'{"error": {"message": "bad", "code": 400}}', Response(), 1.0)
    assert info.value.error_type == "invalid_request" and not info.value.retryable


def test_malformed_json_event_is_a_retryable_protocol_error() -> None:
    with pytest.raises(RequestError) as info:
        P.handle_event(b'{"choices": [', Response(), 1.0)
    assert info.value.error_type == "protocol" and info.value.retryable


def test_non_streaming_body() -> None:
    body = {
        "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
    }
    resp = Response()
    P.parse_body(orjson.dumps(body), resp, 2.0)
    assert resp.text == "Hi" and resp.completion_tokens == 1 and P.is_complete(resp)


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (400, "invalid_request", False),
        (401, "auth", False),
        (403, "auth", False),
        (404, "not_found", False),
        (408, "timeout", True),
        (409, "server", True),
        (422, "invalid_request", False),
        (429, "rate_limit", True),
        (500, "server", True),
        (503, "server", True),
    ],
)
def test_status_classification(status: int, error_type: str, retryable: bool) -> None:
    err = P.error_for_status(status, {}, b'{"error": {"message": "nope"}}')
    assert (err.error_type, err.retryable, err.http_status) == (error_type, retryable, status)
    assert "nope" in err.message


def test_x_should_retry_overrides_the_status() -> None:
    assert not P.error_for_status(503, {"x-should-retry": "false"}, b"").retryable
    assert P.error_for_status(400, {"x-should-retry": "true"}, b"").retryable


def test_html_error_page_is_summarised() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>" + b"x" * 10_000
    err = P.error_for_status(502, {}, page)
    assert "502 Bad Gateway" in err.message and len(err.message) < 400


def test_plain_string_error_body() -> None:
    assert (
        "model is loading" in P.error_for_status(503, {}, b'{"error": "model is loading"}').message
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Sun, 22 Nov 2026 00:00:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1795305600.0  # 2026-11-22T00:00:00Z
    assert parse_retry_after(headers, now=now) == expected


def test_retry_after_is_read_from_429_headers() -> None:
    err = P.error_for_status(429, {"retry-after": "3"}, b"")
    assert err.retry_after_s == 3.0


@pytest.mark.parametrize("done_at", [-1, 1], ids=["at the end", "mid-stream"])
def test_a_batch_with_done_anywhere_reads_as_the_same_events(done_at: int) -> None:
    """[DONE] ends the stream wherever it stands; the events around it are kept, in order."""
    payloads = [
        orjson.dumps(chunk({"content": "Hel"})),
        orjson.dumps(chunk({"content": "lo"})),
        orjson.dumps(chunk({}, "stop")),
    ]
    payloads.insert(len(payloads) + 1 + done_at if done_at < 0 else done_at, b"[DONE]")
    resp = Response()
    P.handle_batch(payloads, [1.0, 2.0, 3.0, 4.0], resp)
    one_by_one = events(Response(), *payloads)
    assert resp.done and one_by_one.done and resp.finish_reason == "stop"
    assert resp.text == one_by_one.text == "Hello"
    assert resp.token_chunks == 2
    first = 1.0
    last = 2.0 if done_at < 0 else 3.0  # the marker's own time is dropped with it
    assert (resp.first_token_t, resp.last_token_t) == (first, last)
