"""The Batch API wire shapes: request lines, batch objects, result lines."""

from __future__ import annotations

import orjson
import pytest

from llamabatch.config import ModelConfig
from llamabatch.wire import Response, provider_for
from llamabatch.wire.batches import (
    BatchEndpoints,
    BatchInfo,
    apply_result,
    batch_list,
    custom_id,
    request_line,
    split_custom_id,
)

MODEL = ModelConfig(name="m", provider="openai", model="gpt", base_url="https://h/v1", stream=False)
OPENAI = provider_for("openai")


def test_a_request_line_wraps_the_online_request_body() -> None:
    request = OPENAI.build_request(MODEL, [{"role": "user", "content": "hi"}], {"seed": 1}, "sk")
    line = request_line(custom_id("m", "p:1", 2), request)
    data = orjson.loads(line)
    assert line.endswith(b"\n") and data["method"] == "POST"
    assert data["url"] == "/v1/chat/completions" and data["custom_id"] == "m:2:p:1"
    assert orjson.dumps(data["body"]) == request.body and "stream" not in data["body"]
    assert b"sk" not in line
    assert split_custom_id(data["custom_id"]) == ("m", "p:1", 2)


def test_endpoint_requests() -> None:
    endpoints = BatchEndpoints(MODEL, "sk")
    create = endpoints.create("file-1", {"llamabatch_chunk": "c"})
    assert create.url == "https://h/v1/batches" and create.headers["Authorization"] == "Bearer sk"
    assert orjson.loads(create.body) == {
        "input_file_id": "file-1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"llamabatch_chunk": "c"},
    }
    assert endpoints.retrieve("b1").method == "GET"
    assert endpoints.content("f").url == "https://h/v1/files/f/content"
    assert endpoints.listing("b9").url == "https://h/v1/batches?limit=100&after=b9"


def test_batch_objects_from_openai_and_together() -> None:
    info = BatchInfo.from_json(
        {
            "id": "batch_1",
            "status": "completed",
            "input_file_id": "f1",
            "output_file_id": "f2",
            "error_file_id": None,
            "created_at": 100,
            "completed_at": 160,
            "request_counts": {"total": 3, "completed": 2, "failed": 1},
        }
    )
    assert info.terminal and info.total == 3 and info.failed == 1
    assert (info.created_at, info.finished_at, info.error_file_id) == (100.0, 160.0, None)
    together = BatchInfo.from_json({"job": {"id": "t", "status": "IN_PROGRESS"}})
    assert together.status == "in_progress" and not together.terminal
    failed = BatchInfo.from_json(
        {
            "id": "b",
            "status": "failed",
            "errors": {"data": [{"code": "bad", "message": "x", "line": 3}]},
        }
    )
    assert failed.errors == "bad: x (line 3)"
    page = {"data": [{"id": "b2", "status": "completed"}], "has_more": True, "last_id": "b2"}
    assert batch_list(orjson.dumps(page))[1] == "b2"
    assert batch_list(orjson.dumps({**page, "has_more": False}))[1] is None


def _line(response: object, error: object = None) -> bytes:
    return orjson.dumps({"id": "r", "custom_id": "m:0:p", "response": response, "error": error})


def test_an_output_line_fills_the_response_like_an_online_answer() -> None:
    body = {
        "choices": [
            {"message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    resp = Response()
    line_id, error = apply_result(_line({"status_code": 200, "body": body}), OPENAI, resp)
    assert (line_id, error) == ("m:0:p", None)
    assert resp.text == "Paris" and resp.finish_reason == "stop" and resp.total_tokens == 6


@pytest.mark.parametrize(
    ("line", "kind", "text"),
    [
        (
            _line({"status_code": 400, "body": {"error": {"message": "bad role"}}}),
            "invalid_request",
            "bad role",
        ),
        (_line({"status_code": 500, "body": {"error": {"message": "boom"}}}), "server", "boom"),
        (
            _line(None, {"code": "batch_expired", "message": "too late"}),
            "timeout",
            "batch_expired: too late",
        ),
        (_line({"status_code": 200, "body": {"nope": 1}}), "protocol", "no choices"),
    ],
)
def test_failed_lines_become_typed_errors(line: bytes, kind: str, text: str) -> None:
    _, error = apply_result(line, OPENAI, Response())
    assert error is not None and error.error_type == kind and text in error.message
