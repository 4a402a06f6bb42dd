"""Embedding endpoints: OpenAI-compatible `/embeddings` and Ollama's `/api/embed`.

One request embeds a list of inputs. OpenAI-compatible servers (OpenAI, vLLM,
llama.cpp and llama-cpp-python started with embeddings on, TGI, Together,
Mistral) answer `{"data": [{"index", "embedding"}], "usage"}`, each embedding
a list of floats or, with `encoding_format = "base64"`, the base64 of its
little-endian float32 bytes; `dimensions` asks for shorter vectors. Ollama
answers `{"embeddings": [[...], ...], "prompt_eval_count"}`. Vectors come back
as float32 arrays in input order; token counts are the whole request's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import numpy as np

from llamabatch.config.schema import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire.request import HttpRequest, json_post, merge_extra, split_extra
from llamabatch.wire.response import Response, number_or_none
from llamabatch.wire.sse import NDJSONDecoder
from llamabatch.wire.status import decode_json, status_error, stream_error

Vector = np.ndarray[Any, np.dtype[np.float32]]
# Ollama request fields that stay at the top level; other parameters go into `options`.
OLLAMA_TOP_LEVEL: Final = frozenset({"truncate", "keep_alive", "dimensions"})
_NS: Final = 1e-9


class EmbeddingResponse(Response):
    """An embeddings response: one vector per input, in input order."""

    __slots__ = ("expected", "vectors")

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected  # how many inputs the request sent
        self.vectors: list[Vector] = []


class EmbeddingFormat:
    """Request building and response parsing of one embeddings API (never streamed)."""

    name: ClassVar[str]
    path: ClassVar[str]

    def build_request(
        self,
        model: ModelConfig,
        inputs: Sequence[str],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> HttpRequest:
        params, extra = split_extra(params)
        body = {"model": model.model, "input": list(inputs), **self.params(params)}
        request = json_post(model, self.path, merge_extra(body, extra), api_key, sse=False)
        return HttpRequest(request.url, request.headers, request.body, stream=False)

    def params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return dict(params)

    def parse_body(self, body: bytes, resp: Response, t: float) -> None:
        assert isinstance(resp, EmbeddingResponse)
        data = decode_json(body)
        if not isinstance(data, dict):
            raise RequestError("protocol", "response is not a JSON object", retryable=True)
        if "error" in data:
            raise stream_error(data)
        embeddings = self.embeddings(data)
        if len(embeddings) != resp.expected:
            raise RequestError(
                "protocol",
                f"{len(embeddings)} embeddings for {resp.expected} inputs",
                retryable=True,
            )
        resp.vectors = [_vector(e) for e in embeddings]
        self.usage(data, resp)
        resp.done = True

    def embeddings(self, data: Mapping[str, Any]) -> list[Any]:
        """The raw embeddings of a response, in input order."""
        raise NotImplementedError

    def usage(self, data: Mapping[str, Any], resp: EmbeddingResponse) -> None:
        raise NotImplementedError

    # What the transport asks of every format; embeddings are never streamed.
    def decoder(self) -> NDJSONDecoder:
        return NDJSONDecoder()

    def handle_batch(self, payloads: list[bytes], times: list[float], resp: Response) -> None:
        raise RequestError("protocol", "embeddings are not streamed", retryable=True)

    def is_complete(self, resp: Response) -> bool:
        return resp.done

    def error_for_status(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> RequestError:
        return status_error(status, headers, body)


class OpenAIEmbeddings(EmbeddingFormat):
    """`POST <base_url>/embeddings` (base URL ending at the API version, like chat)."""

    name: ClassVar[str] = "openai"
    path: ClassVar[str] = "/embeddings"

    def embeddings(self, data: Mapping[str, Any]) -> list[Any]:
        items = data.get("data")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise RequestError("protocol", "response has no 'data' list", retryable=True)
        # Each item names its input's index: servers need not keep the order.
        indexed = {item.get("index", n): item.get("embedding") for n, item in enumerate(items)}
        if sorted(indexed, key=str) != sorted(range(len(items)), key=str):
            raise RequestError("protocol", "embedding indexes are not 0..n-1", retryable=True)
        return [indexed[n] for n in range(len(items))]

    def usage(self, data: Mapping[str, Any], resp: EmbeddingResponse) -> None:
        usage = data.get("usage")
        if isinstance(usage, dict):
            resp.set_usage(usage.get("prompt_tokens"), None, usage.get("total_tokens"))


class OllamaEmbeddings(EmbeddingFormat):
    """Ollama's `POST <server root>/api/embed`; options beside the top-level fields."""

    name: ClassVar[str] = "ollama"
    path: ClassVar[str] = "/api/embed"

    def params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {k: v for k, v in params.items() if k in OLLAMA_TOP_LEVEL}
        options = {k: v for k, v in params.items() if k not in OLLAMA_TOP_LEVEL}
        if options:
            body["options"] = options
        return body

    def embeddings(self, data: Mapping[str, Any]) -> list[Any]:
        embeddings = data.get("embeddings")
        if not isinstance(embeddings, list):
            raise RequestError("protocol", "response has no 'embeddings' list", retryable=True)
        return embeddings

    def usage(self, data: Mapping[str, Any], resp: EmbeddingResponse) -> None:
        if "prompt_eval_count" in data:
            count = data["prompt_eval_count"]
            resp.set_usage(count, None, count)
        resp.server_load_s = number_or_none(data.get("load_duration"), _NS)


def _vector(embedding: Any) -> Vector:
    """One embedding as float32: a list of numbers, or base64 of little-endian float32."""
    if isinstance(embedding, str):
        try:
            raw = base64.b64decode(embedding, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                "protocol", "embedding is not valid base64", retryable=True
            ) from None
        if len(raw) % 4:
            raise RequestError("protocol", "base64 embedding is not float32s", retryable=True)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if isinstance(embedding, list) and embedding and isinstance(embedding[0], list):
        # llama.cpp-based servers without a pooling type answer one vector per token.
        raise RequestError(
            "invalid_request",
            "the server sent one vector per token (its model has no pooling type): start it "
            "with a pooling type, e.g. llama.cpp's --pooling mean",
            stops_model=True,
        )
    try:
        vector = np.asarray(embedding, dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError(
            "protocol", "embedding is not a list of numbers", retryable=True
        ) from None
    if vector.ndim != 1 or not len(vector):
        raise RequestError("protocol", "embedding is not a list of numbers", retryable=True)
    return vector


_FORMATS: Final[Mapping[str, EmbeddingFormat]] = {
    "openai": OpenAIEmbeddings(),
    "sim": OpenAIEmbeddings(),
    "ollama": OllamaEmbeddings(),
}


def embedding_format_for(provider: str) -> EmbeddingFormat:
    """The embeddings API of a wire format (validated by config: not `llama`)."""
    return _FORMATS[provider]
