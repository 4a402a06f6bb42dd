"""The simulator's embedding endpoints: OpenAI-compatible `/v1/embeddings`, Ollama's `/api/embed`.

Each input gets a unit vector drawn from a hash of its text and the server's
seed, so the same text always has the same vector; its length is the
profile's `embedding_dims`, or the request's `dimensions`. With
`encoding_format = "base64"` the OpenAI form sends each vector's float32
bytes. A request takes the profile's `ttft_s`. Faults are the chat
endpoints': scripted actions, random 429s, 503s and disconnects, the RPM
limit, the API key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections import deque
from functools import partial
from typing import Any, Protocol

import numpy as np
import orjson
from aiohttp import web

from llamabatch.sim import replies
from llamabatch.sim.formats import OLLAMA, OPENAI, SimFormat
from llamabatch.sim.plan import count_tokens
from llamabatch.sim.profile import SimProfile
from llamabatch.sim.stats import SimStats

_JSON = orjson.OPT_SERIALIZE_NUMPY


class SimServer(Protocol):
    """What the embedding endpoints use of the simulator: its profiles, faults and limits."""

    @property
    def stats(self) -> SimStats: ...

    @property
    def seed(self) -> int: ...

    @property
    def script(self) -> deque[str]: ...

    def note_request(self) -> None: ...

    def serves(self, model: str) -> bool: ...

    def profile(self, model: str) -> SimProfile: ...

    def _check_key(self, request: web.Request, fmt: SimFormat) -> web.Response | None: ...

    def _random_fault(self, model: str, profile: SimProfile) -> str: ...

    async def _fault(
        self,
        request: web.Request,
        action: str,
        profile: SimProfile,
        body: dict[str, Any],
        model: str,
        fmt: SimFormat,
    ) -> web.StreamResponse: ...

    def _rpm_check(self, fmt: SimFormat) -> web.Response | None: ...

    def _budget_headers(self) -> dict[str, str]: ...


def add_routes(app: web.Application, server: SimServer) -> None:
    app.router.add_post("/v1/embeddings", partial(_embed, server, fmt=OPENAI))
    app.router.add_post("/api/embed", partial(_embed, server, fmt=OLLAMA))


def unit_vector(text: str, dims: int, seed: int = 0) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The simulator's embedding of `text`: deterministic, of length 1."""
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    vector = np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(
        dims, dtype=np.float32
    )
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


async def _embed(server: SimServer, request: web.Request, *, fmt: SimFormat) -> web.StreamResponse:
    server.note_request()
    try:
        body = await request.json(loads=orjson.loads)
        response = await _answer(server, request, body, fmt)
    except (ValueError, AttributeError):
        response = replies.bad_request("request body is not a JSON object", fmt)
    server.stats.statuses[response.status] += 1
    return response


async def _answer(
    server: SimServer, request: web.Request, body: dict[str, Any], fmt: SimFormat
) -> web.StreamResponse:
    model = str(body.get("model", "?"))
    server.stats.by_model[model] += 1
    if (denied := server._check_key(request, fmt)) is not None:
        return denied
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        return replies.bad_request("'input' must be a string or a non-empty list of strings", fmt)
    dims = body.get("dimensions") or server.profile(model).embedding_dims
    if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
        return replies.bad_request("'dimensions' must be a positive integer", fmt)
    if not server.serves(model):
        return replies.unknown_model(model, fmt)
    profile = server.profile(model)
    longest = max(count_tokens(text) for text in inputs)
    if profile.context_tokens and longest > profile.context_tokens:
        return replies.too_long(longest, 0, profile.context_tokens, fmt)
    action = server.script.popleft() if server.script else server._random_fault(model, profile)
    if action in ("disconnect", "malformed", "error-event"):
        return await _broken(request, action)
    if action != "ok":
        return await server._fault(request, action, profile, body, model, fmt)
    if (limited := server._rpm_check(fmt)) is not None:
        return limited
    vectors = [unit_vector(text, dims, server.seed) for text in inputs]
    tokens = sum(count_tokens(text) for text in inputs)
    await asyncio.sleep(profile.ttft_s)
    if fmt is OLLAMA:
        payload: dict[str, Any] = {
            "model": model,
            "embeddings": vectors,
            "total_duration": round(profile.ttft_s * 1e9),
            "load_duration": 1_000_000,
            "prompt_eval_count": tokens,
        }
    else:
        b64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if b64 else v,
            }
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        payload = {"object": "list", "data": data, "model": model, "usage": usage}
    return web.Response(
        body=orjson.dumps(payload, option=_JSON),
        content_type="application/json",
        headers=server._budget_headers(),
    )


async def _broken(request: web.Request, action: str) -> web.StreamResponse:
    """A 200 whose body is cut off (`disconnect`), not JSON, or an error object."""
    if action == "error-event":
        return web.json_response({"error": {"message": "overloaded", "type": "server_error"}})
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b'{"object": "list", "data": [{"index": 0, "embedding": [0.1, ')
    if action == "disconnect":
        assert request.transport is not None
        request.transport.close()
        return response
    await response.write(b" " * (1000 - 60))  # the whole promised length, but no valid JSON
    return response
