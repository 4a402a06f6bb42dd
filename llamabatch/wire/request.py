"""A request as it goes on the wire, and the one way llamabatch builds JSON POSTs and auth."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from llamabatch.config.schema import ModelConfig


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
