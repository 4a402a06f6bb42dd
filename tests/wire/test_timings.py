"""What each wire format reports for the latency definitions: first output, first answer, chunks."""

from __future__ import annotations

import orjson
import pytest

from llamabatch.results.metrics import chunk_columns, timings
from llamabatch.wire import Response, provider_for

OPENAI = provider_for("openai")


def chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    choice: dict[str, object] = {"index": 0, "delta": delta, "finish_reason": finish}
    if "logprobs" in extra:
        choice["logprobs"] = extra.pop("logprobs")
    return orjson.dumps({"choices": [choice], **extra})


def logprobs(n: int) -> dict[str, object]:
    return {"content": [{"token": "x", "logprob": -0.1, "top_logprobs": []}] * n}


def stream(provider_name: str, payloads: list[bytes], *, chunk_times: bool = True) -> Response:
    """Feed payloads as one batch (the transport's way), payload i arriving at t = 1 + i."""
    resp = Response(chunk_times=chunk_times)
    resp.started_t, resp.first_byte_t = 0.5, 0.75
    provider_for(provider_name).handle_batch(
        payloads, [1.0 + i for i in range(len(payloads))], resp
    )
    resp.ended_t = 1.0 + len(payloads)
    return resp


REASONING_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Let me"}),
    chunk({"reasoning_content": " think."}),
    chunk({"content": "Four"}),
    chunk({"content": "."}),
    chunk({}, "stop"),
    orjson.dumps(
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 6,
                "total_tokens": 15,
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        }
    ),
    b"[DONE]",
]


def test_a_reasoning_stream_has_its_first_answer_after_its_first_token() -> None:
    resp = stream("openai", REASONING_STREAM)
    row = timings(resp, resp.completion_tokens)
    # role-only chunk at 1.0 does not count; reasoning at 2.0; the answer at 4.0.
    assert row["ttfb_s"] == 0.25 and row["ttft_s"] == 1.5 and row["ttfa_s"] == 3.5
    assert resp.reasoning_tokens == 4
    assert resp.extra_columns()["reasoning_tokens"] == 4


def test_without_reasoning_the_first_answer_is_the_first_token() -> None:
    resp = stream("openai", [chunk({"role": "assistant"}), chunk({"content": "Hi"}), b"[DONE]"])
    row = timings(resp, 1)
    assert row["ttft_s"] == row["ttfa_s"] == 1.5


def test_only_reasoning_has_no_first_answer() -> None:
    resp = stream("openai", [chunk({"reasoning": "hmm"}), chunk({}, "length")])
    row = timings(resp, 1)
    assert row["ttft_s"] == 0.5 and row["ttfa_s"] is None


def test_a_tool_call_is_an_answer() -> None:
    call = {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}
    resp = stream("openai", [chunk({"reasoning_content": "x"}), chunk(call), chunk({}, "stop")])
    assert timings(resp, 2)["ttfa_s"] == 1.5


def test_chunk_times_are_every_output_chunk_in_order_with_logprob_token_counts() -> None:
    resp = stream(
        "openai",
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "r"}, logprobs=logprobs(1)),  # the long way
            chunk({"content": "ab"}, logprobs=logprobs(2)),  # the fast path
            chunk({"content": "c"}),
            chunk({"content": "d"}, "stop", logprobs=logprobs(1)),  # long way again
            b"[DONE]",
        ],
    )
    columns = chunk_columns(resp)
    assert columns["chunk_times_s"] == [1.5, 2.5, 3.5, 4.5]
    assert columns["chunk_tokens"] == [1, 2, None, 1]
    assert resp.text == "abcd" and resp.first_answer_t == 3.0


def test_chunk_tokens_from_usage_sent_with_every_chunk() -> None:
    def usage(n: int) -> dict[str, int]:
        return {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}

    resp = stream(
        "openai",
        [
            chunk({"content": "a"}, usage=usage(1)),
            chunk({"content": "bcd"}, usage=usage(4)),
            chunk({}, "stop", usage=usage(4)),
        ],
    )
    assert chunk_columns(resp)["chunk_tokens"] == [1, 3]
    assert resp.completion_tokens == 4


def test_unknown_token_counts_are_one_null() -> None:
    resp = stream("openai", [chunk({"content": "a"}), chunk({"content": "b"}), b"[DONE]"])
    assert chunk_columns(resp) == {"chunk_times_s": [0.5, 1.5], "chunk_tokens": None}


def test_nothing_is_collected_when_chunk_times_are_off() -> None:
    resp = stream("openai", REASONING_STREAM, chunk_times=False)
    assert resp.chunks is None and chunk_columns(resp) == {}
    assert timings(resp, 6)["ttfa_s"] == 3.5  # the definitions do not depend on it


def test_ollama_thinking_then_content() -> None:
    def line(**message: str) -> bytes:
        return orjson.dumps({"message": {"role": "assistant", **message}, "done": False})

    final = orjson.dumps({"message": {"role": "assistant", "content": ""}, "done": True})
    resp = stream("ollama", [line(thinking="hm"), line(content="Yes"), final])
    row = timings(resp, 2)
    assert (row["ttft_s"], row["ttfa_s"]) == (0.5, 1.5)
    assert chunk_columns(resp)["chunk_times_s"] == [0.5, 1.5]


@pytest.mark.parametrize("kind", ["reasoning", "text"])
def test_llama_api_reasoning_and_text_deltas(kind: str) -> None:
    def event(event_type: str, delta: dict[str, str]) -> bytes:
        return orjson.dumps({"event": {"event_type": event_type, "delta": delta}})

    first = {"type": kind, kind: "x"}
    resp = stream(
        "llama",
        [event("progress", first), event("progress", {"type": "text", "text": "y"})],
    )
    assert timings(resp, 2)["ttfa_s"] == (1.5 if kind == "reasoning" else 0.5)


def test_times_on_two_clocks_are_settled_in_the_order_their_events_had() -> None:
    """Head <= first token <= end and chunk times never going back, though the clocks disagree.

    Kernel stamps (converted) and perf_counter can differ by microseconds; a
    row whose ttft_s exceeds its latency_s is impossible for an honest measurement.
    """
    resp = Response(chunk_times=True)
    resp.started_t, resp.first_byte_t = 1.0, 1.0021
    resp.mark(1.002, tokens=1)
    resp.mark(1.0015, tokens=1)  # converted with another reading: 0.5 ms early
    resp.mark(1.003, tokens=1)
    resp.ended_t = 1.0025
    resp.settle()
    row = timings(resp, 3)
    assert row["ttfb_s"] <= row["ttft_s"] <= row["ttfa_s"] <= row["latency_s"]  # type: ignore[operator]
    times = chunk_columns(resp)["chunk_times_s"]  # to the microsecond
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= row["latency_s"] + 1e-6  # type: ignore[operator]
    assert resp.ended_t == 1.003 and resp.first_byte_t == 1.002
