"""A request as it goes on the wire, and the one way llamabatch builds JSON POSTs and auth."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from llamabatch.config.schema import ModelConfig
from llamabatch.requestspec import EXTRA_BODY


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A fully built request: what goes on the wire, nothing else."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    stream: bool
    method: str = "POST"


def auth_headers(model: ModelConfig, api_key: str | None) -> dict[str, str]:
    """The model's own headers and, with a key, the bearer `Authorization`."""
    headers = dict(model.headers)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def json_post(
    model: ModelConfig, path: str, body: Mapping[str, Any], api_key: str | None, *, sse: bool
) -> HttpRequest:
    """A JSON POST to `<base_url><path>`, bearer-authenticated, asking for SSE when `sse`."""
    headers = {"Content-Type": "application/json", **auth_headers(model, api_key)}
    if sse:
        headers["Accept"] = "text/event-stream"
    assert model.base_url is not None
    return HttpRequest(
        url=f"{model.base_url}{path}", headers=headers, body=orjson.dumps(body), stream=model.stream
    )


def split_extra(params: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    """`params` without `extra_body`, and `extra_body` (None when there is none)."""
    if EXTRA_BODY not in params:
        return params, None
    extra = params[EXTRA_BODY]
    return {k: v for k, v in params.items() if k != EXTRA_BODY}, extra


def merge_extra(body: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """`body` with `extra_body`'s settings added as they are (a table merges into a table)."""
    for key, value in (extra or {}).items():
        current = body.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            body[key] = {**current, **value}  # Ollama's `options`, say
        else:
            body[key] = value
    return body
