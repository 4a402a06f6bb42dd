"""The simulator's error replies, each with the body of the real server that sends it.

OpenAI: a bad key, an unknown model, a rate limit. vLLM: `BadRequestError`,
`InternalServerError`, a prompt beyond the context window. llama.cpp: 503
`unavailable_error` while a model loads. llama-cpp-python: the 500 "validation
error" it answers a request its schema rejects (an unknown role), which is a
client error in a server error's clothes. Ollama: `{"error": "..."}` always.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from llamabatch.sim.formats import OLLAMA, OPENAI, SimFormat


def error(
    status: int,
    message: str,
    kind: str,
    code: str | int | None = None,
    *,
    fmt: SimFormat = OPENAI,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = fmt.error_body(message, kind, code)
    return web.json_response(
        body, status=status, headers=headers, dumps=lambda o: orjson.dumps(o).decode()
    )


def bad_key(fmt: SimFormat, message: str = "Incorrect API key provided.") -> web.Response:
    return error(401, message, "invalid_request_error", "invalid_api_key", fmt=fmt)


def unknown_model(model: str, fmt: SimFormat) -> web.Response:
    message = f"The model `{model}` does not exist or you do not have access to it."
    if fmt is OLLAMA:
        message = f'model "{model}" not found, try pulling it first'
    return error(404, message, "invalid_request_error", "model_not_found", fmt=fmt)


def rate_limited(
    fmt: SimFormat, headers: Mapping[str, str], message: str = "Rate limit reached for requests"
) -> web.Response:
    return error(429, message, "requests", "rate_limit_exceeded", fmt=fmt, headers=headers)


def bad_request(message: str, fmt: SimFormat) -> web.Response:
    return error(400, message, "BadRequestError", 400, fmt=fmt)


def too_long(prompt_tokens: int, max_tokens: int, context: int, fmt: SimFormat) -> web.Response:
    message = (
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
        "in the completion). Please reduce the length of the messages or completion."
    )
    return error(400, message, "BadRequestError", 400, fmt=fmt)


def validation_500(role: str, fmt: SimFormat) -> web.Response:
    """What llama-cpp-python answers a message with an unknown role."""
    message = (
        "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'messages', 0, "
        f"'role'), 'msg': \"Input should be 'user'\", 'input': '{role}'}}"
    )
    return error(500, message, "internal_server_error", fmt=fmt)


def by_status(status: int, fmt: SimFormat) -> web.Response:
    """A scripted HTTP error with the body a real server sends with that status."""
    if status == 401:
        return bad_key(fmt)
    if status == 404:
        return unknown_model("unknown", fmt)
    if status == 429:
        return rate_limited(fmt, {})
    if status == 503:
        return error(503, "Loading model", "unavailable_error", 503, fmt=fmt)
    if status >= 500:
        return error(status, f"simulated error {status}", "InternalServerError", status, fmt=fmt)
    return error(status, f"simulated error {status}", "BadRequestError", status, fmt=fmt)
