"""Error classification by body as well as status, on bodies real servers send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamabatch.wire.status import status_error, stream_error

# llama-cpp-python 0.3 (the local Gemma server) for a message with role "wizard".
LLAMA_CPP_PYTHON_ROLE = {
    "error": {
        "message": "7 validation errors:\n  {'type': 'literal_error', 'loc': ('body', "
        "'messages', 0, 'ChatCompletionRequestSystemMessage', 'role'), 'msg': \"Input "
        "should be 'system'\", 'input': 'wizard'}\n",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}
# llama-cpp-python for a prompt longer than n_ctx.
LLAMA_CPP_PYTHON_CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 2048 tokens. However, you "
        "requested 3014 tokens (3010 in the messages, 4 in the completion).",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
# llama.cpp's llama-server (format_error_response, ERROR_TYPE_EXCEED_CONTEXT_SIZE).
LLAMA_CPP_CONTEXT = {
    "error": {
        "code": 400,
        "message": "request (13392 tokens) exceeds the available context size (8192 "
        "tokens), try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 13392,
        "n_ctx": 8192,
    }
}
# llama-server when a chat template raises (ERROR_TYPE_SERVER).
LLAMA_CPP_TEMPLATE = {
    "error": {
        "code": 500,
        "message": "Conversation roles must alternate user/assistant/user/assistant/...",
        "type": "server_error",
    }
}
# vLLM's ErrorResponse, and the flat shape of versions before 0.10.
VLLM_CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 4096 tokens. However, you "
        "requested 5000 tokens (4000 in the messages, 1000 in the completion).",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
}
VLLM_FLAT_BAD = {
    "object": "error",
    "message": "temperature must be non-negative, got -1.0.",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}
VLLM_ENGINE_DEAD = {
    "error": {
        "message": "EngineCore encountered an issue.",
        "type": "InternalServerError",
        "param": None,
        "code": 500,
    }
}
OPENAI_CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 130000 tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
OPENAI_BAD_KEY = {
    "error": {
        "message": "Incorrect API key provided: sk-...",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
TGI_TOO_LONG = {
    "error": "Input validation error: `inputs` must have less than 4096 tokens. Given: 5000",
    "error_type": "validation",
}
TGI_VALIDATION = {
    "error": "Input validation error: `temperature` must be strictly positive",
    "error_type": "validation",
}
FASTAPI_422 = {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}


@pytest.mark.parametrize(
    ("status", "body", "error_type", "retryable", "stops_model"),
    [
        (500, LLAMA_CPP_PYTHON_ROLE, "invalid_request", False, False),
        (400, LLAMA_CPP_PYTHON_CONTEXT, "context_length", False, False),
        (400, LLAMA_CPP_CONTEXT, "context_length", False, False),
        (500, LLAMA_CPP_TEMPLATE, "invalid_request", False, False),
        (400, VLLM_CONTEXT, "context_length", False, False),
        (400, VLLM_FLAT_BAD, "invalid_request", False, False),
        (500, VLLM_ENGINE_DEAD, "server", True, False),
        (400, OPENAI_CONTEXT, "context_length", False, False),
        (401, OPENAI_BAD_KEY, "auth", False, True),
        (422, TGI_VALIDATION, "invalid_request", False, False),
        (503, TGI_TOO_LONG, "context_length", False, False),  # behind a proxy that says 503
        (502, TGI_VALIDATION, "invalid_request", False, False),
        (422, FASTAPI_422, "invalid_request", False, False),
        (404, {"error": "model 'x' not found, try pulling it first"}, "not_found", False, True),
        (
            503,
            {"error": {"message": "overloaded", "type": "unavailable_error"}},
            "server",
            True,
            False,
        ),
        (429, {"error": {"message": "slow down", "type": "requests"}}, "rate_limit", True, False),
    ],
)
def test_status_and_body_decide_the_error(
    status: int, body: Any, error_type: str, retryable: bool, stops_model: bool
) -> None:
    error = status_error(status, {}, json.dumps(body).encode())
    assert (error.error_type, error.retryable, error.stops_model) == (
        error_type,
        retryable,
        stops_model,
    )
    assert error.http_status == status and error.message.startswith(f"HTTP {status}: ")


def test_an_invalid_body_is_final_even_when_the_server_says_retry() -> None:
    error = status_error(500, {"x-should-retry": "true"}, json.dumps(LLAMA_CPP_TEMPLATE).encode())
    assert error.error_type == "invalid_request" and not error.retryable


def test_an_html_5xx_page_stays_a_retryable_server_error() -> None:
    error = status_error(502, {}, b"<html><title>502 Bad Gateway</title></html>")
    assert error.error_type == "server" and error.retryable


@pytest.mark.parametrize(
    ("payload", "error_type", "retryable"),
    [
        (OPENAI_CONTEXT, "context_length", False),
        (
            {"error": {"message": "unknown role: wizard", "type": "server_error"}},
            "invalid_request",
            False,
        ),
        (TGI_VALIDATION, "invalid_request", False),
        ({"error": "Request failed during generation", "error_type": "generation"}, "server", True),
        ({"error": {"message": "overloaded", "code": 503}}, "server", True),
    ],
)
def test_error_objects_inside_a_stream_are_classified_the_same(
    payload: dict[str, Any], error_type: str, retryable: bool
) -> None:
    error = stream_error(payload)
    assert (error.error_type, error.retryable) == (error_type, retryable)
