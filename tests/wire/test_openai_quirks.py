"""What OpenAI-compatible servers do differently, parsed into the same Response."""

from __future__ import annotations

import json

import orjson
import pytest

from llamabatch.errors import RequestError
from llamabatch.wire import Response
from llamabatch.wire.openai import OpenAIProvider

P = OpenAIProvider()


def events(*payloads: object) -> Response:
    resp = Response()
    for i, payload in enumerate(payloads):
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        P.handle_event(raw, resp, 1.0 + i)
    return resp


def chunk(
    delta: dict[str, object], finish: str | None = None, **extra: object
) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_field_is_stored_apart_and_counts_for_ttft(field: str) -> None:
    resp = events(
        chunk({field: "Let me think. "}), chunk({field: "Done."}), chunk({"content": "4"})
    )
    assert resp.first_token_t == 1.0
    columns = resp.extra_columns()
    assert resp.text == "4" and columns["reasoning_text"] == "Let me think. Done."


def test_tool_calls_are_accumulated_by_index() -> None:
    def call(index: int, **fields: object) -> dict[str, object]:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    resp = events(
        call(0, id="call_a", type="function", function={"name": "weather", "arguments": ""}),
        call(1, id="call_b", type="function", function={"name": "time", "arguments": "{}"}),
        call(0, function={"arguments": '{"city": '}),
        call(0, function={"arguments": '"Paris"}'}),
        chunk({}, "tool_calls"),
    )
    calls = json.loads(resp.extra_columns()["tool_calls"])
    assert calls == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]
    assert resp.first_token_t == 1.0 and resp.finish_reason == "tool_calls"


def test_tool_call_arguments_as_an_object_become_json_text() -> None:
    resp = Response()
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    P.parse_body(orjson.dumps(body), resp, 1.0)
    (call,) = json.loads(resp.extra_columns()["tool_calls"])
    assert call["function"] == {"name": "f", "arguments": '{"x":1}'}


def test_mistral_content_as_a_list_of_chunks() -> None:
    resp = events(
        chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]}]}),
        chunk({"content": [{"type": "text", "text": "Bon"}, {"type": "text", "text": "jour"}]}),
        chunk({}, "stop"),
    )
    assert resp.text == "Bonjour" and resp.extra_columns()["reasoning_text"] == "hm"


def test_tgi_plain_string_errors_in_a_stream() -> None:
    with pytest.raises(RequestError) as info:
        events(
            chunk({"content": "x"}),
            {"error": "Request failed during generation", "error_type": "generation"},
        )
    assert info.value.error_type == "server" and info.value.retryable
    with pytest.raises(RequestError) as info:
        events({"error": "Input validation error: `inputs` too long", "error_type": "validation"})
    assert info.value.error_type == "invalid_request" and not info.value.retryable
    assert "too long" in info.value.message
    with pytest.raises(RequestError) as info:
        events({"error": "Model is overloaded", "error_type": "overloaded"})
    assert info.value.error_type == "rate_limit" and info.value.retryable


def test_llama_cpp_timings_give_server_timings_and_counts() -> None:
    timings = {
        "prompt_n": 12,
        "cache_n": 4,
        "prompt_ms": 30.5,
        "predicted_n": 9,
        "predicted_ms": 300.0,
        "predicted_per_second": 30.0,
    }
    resp = events(chunk({"content": "Hi"}), chunk({}, "stop", timings=timings), b"[DONE]")
    assert (resp.prompt_tokens, resp.completion_tokens, resp.total_tokens) == (16, 9, 25)
    columns = resp.extra_columns()
    assert columns["server_prompt_s"] == pytest.approx(0.0305)
    assert columns["server_decode_s"] == pytest.approx(0.3)


def test_reported_usage_wins_over_llama_cpp_timings() -> None:
    usage = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
    resp = events(
        chunk({"content": "Hi"}),
        chunk({}, "stop", timings={"prompt_n": 3, "predicted_n": 9, "predicted_ms": 1.0}),
        {"choices": [], "usage": usage},
    )
    assert (resp.prompt_tokens, resp.completion_tokens) == (20, 9)


def test_vllm_usage_on_every_chunk_keeps_the_last() -> None:
    def usage(n: int) -> dict[str, int]:
        return {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}

    resp = events(
        chunk({"role": "assistant", "content": ""}, usage=usage(0)),
        chunk({"content": "a"}, usage=usage(1)),
        chunk({"content": " b"}, usage=usage(2)),
        chunk({}, "stop", usage=usage(2)),
        {"choices": [], "usage": usage(2)},
        b"[DONE]",
    )
    assert (resp.completion_tokens, resp.total_tokens) == (2, 7) and resp.first_token_t == 2.0


def test_groq_usage_under_x_groq() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
    resp = events(chunk({"content": "a"}), chunk({}, "stop", x_groq={"id": "r", "usage": usage}))
    assert resp.completion_tokens == 1 and resp.total_tokens == 8


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Paris", ".<|eot_id|>"], "Paris."),
        (["Paris.", "<|eot_id|>", "<|end_of_text|>"], "Paris."),
        (["Bonjour<end_of_turn>"], "Bonjour"),
        (["a </s> b"], "a </s> b"),  # only at the very end
        (["<|im_end|>"], ""),
    ],
)
def test_trailing_stop_tokens_are_stripped(pieces: list[str], expected: str) -> None:
    resp = events(*(chunk({"content": p}) for p in pieces), chunk({}, "stop"))
    assert resp.text == expected


def test_no_extras_when_the_endpoint_gives_none() -> None:
    resp = events(chunk({"content": "x"}), chunk({}, "stop"))
    assert resp.extra_columns() == {
        "reasoning_text": None,
        "tool_calls": None,
        "reasoning_tokens": None,
        "server_prompt_s": None,
        "server_decode_s": None,
        "server_load_s": None,
    }
