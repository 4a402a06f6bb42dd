"""The embeddings wire formats: OpenAI-compatible /embeddings and Ollama's /api/embed."""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson
import pytest

from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire.embeddings import EmbeddingResponse, embedding_format_for

OPENAI = embedding_format_for("openai")
OLLAMA = embedding_format_for("ollama")
MODEL = ModelConfig(
    name="e", provider="openai", model="text-embedding-3-small", base_url="http://h/v1"
)
OLLAMA_MODEL = ModelConfig(
    name="e", provider="ollama", model="nomic-embed-text", base_url="http://localhost:11434"
)


def parse(fmt: object, body: object, expected: int) -> EmbeddingResponse:
    resp = EmbeddingResponse(expected)
    fmt.parse_body(orjson.dumps(body), resp, 1.0)  # type: ignore[attr-defined]
    return resp


def test_openai_request_sends_the_inputs_as_a_list_with_params() -> None:
    params = {"dimensions": 256, "encoding_format": "base64", "user": "u"}
    req = OPENAI.build_request(MODEL, ["a", "b"], params, "sk-1")
    assert req.url == "http://h/v1/embeddings" and not req.stream
    assert json.loads(req.body) == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "dimensions": 256,
        "encoding_format": "base64",
        "user": "u",
    }
    assert req.headers["Authorization"] == "Bearer sk-1"


def test_ollama_request_keeps_its_fields_and_puts_the_rest_in_options() -> None:
    req = OLLAMA.build_request(
        OLLAMA_MODEL, ["a"], {"truncate": False, "dimensions": 64, "num_ctx": 512}, None
    )
    assert req.url == "http://localhost:11434/api/embed"
    assert json.loads(req.body) == {
        "model": "nomic-embed-text",
        "input": ["a"],
        "truncate": False,
        "dimensions": 64,
        "options": {"num_ctx": 512},
    }


def test_openai_floats_in_index_order_and_usage() -> None:
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
        ],
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    resp = parse(OPENAI, body, 2)
    assert [v.tolist() for v in resp.vectors] == [[1.0, 0.0], [0.0, 1.0]]
    assert all(v.dtype == np.float32 for v in resp.vectors)
    assert (resp.prompt_tokens, resp.total_tokens, resp.completion_tokens) == (7, 7, None)
    assert OPENAI.is_complete(resp)


def test_base64_embeddings_are_little_endian_float32() -> None:
    vector = np.array([0.5, -0.25, 3.0], dtype="<f4")
    encoded = base64.b64encode(vector.tobytes()).decode()
    resp = parse(OPENAI, {"data": [{"index": 0, "embedding": encoded}]}, 1)
    assert resp.vectors[0].tolist() == [0.5, -0.25, 3.0]


def test_ollama_embeddings_and_counts() -> None:
    body = {
        "model": "nomic-embed-text",
        "embeddings": [[0.1, 0.2], [0.3, 0.4]],
        "total_duration": 14143917,
        "load_duration": 1019500,
        "prompt_eval_count": 8,
    }
    resp = parse(OLLAMA, body, 2)
    assert np.allclose(resp.vectors[1], [0.3, 0.4]) and resp.total_tokens == 8
    assert resp.server_load_s == pytest.approx(0.0010195)


@pytest.mark.parametrize(
    ("body", "expected", "message"),
    [
        ({"data": [{"index": 0, "embedding": [1.0]}]}, 2, "1 embeddings for 2 inputs"),
        (
            {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
            2,
            "0..n-1",
        ),
        ({"data": [{"index": 0, "embedding": "not base64!"}]}, 1, "not valid base64"),
        ({"data": [{"index": 0, "embedding": ["x"]}]}, 1, "not a list of numbers"),
        ({"object": "list"}, 1, "no 'data' list"),
    ],
)
def test_malformed_responses_are_retryable_protocol_errors(
    body: object, expected: int, message: str
) -> None:
    with pytest.raises(RequestError, match=message) as info:
        parse(OPENAI, body, expected)
    assert info.value.error_type == "protocol" and info.value.retryable


def test_one_vector_per_token_is_a_server_setup_problem_that_stops_the_model() -> None:
    body = {"data": [{"index": 0, "embedding": [[0.1, 0.2], [0.3, 0.4]]}]}
    with pytest.raises(RequestError, match="pooling") as info:
        parse(OPENAI, body, 1)
    assert not info.value.retryable and info.value.stops_model


def test_an_error_object_under_200_is_an_error() -> None:
    with pytest.raises(RequestError) as info:
        parse(OLLAMA, {"error": "model is loading"}, 1)
    assert "model is loading" in info.value.message


def test_a_context_length_error_is_final() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens, however you "
                "requested 9000 tokens",
                "type": "invalid_request_error",
            }
        }
    )
    error = OPENAI.error_for_status(400, {}, body)
    assert error.error_type == "context_length" and not error.retryable
