"""A real HTTP server that misbehaves on purpose: one OpenAI-style endpoint per hostile case.

`async with HostileServer() as h:` then `h.base_url("usage-huge")` is a base URL
(`.../usage-huge/v1`) whose `/chat/completions` answers as that case says:

    ok               a normal streamed (or JSON) answer
    retry-after      429 with `Retry-After: 99999`; retry-after-inf: `Retry-After: inf`
    reset-huge       200, but x-ratelimit headers say no budget left for 99999 s
    usage-huge       usage.prompt_tokens = 10**30; usage-negative: completion_tokens = -853
    huge             a 100 MB answer (streamed as SSE, or one JSON body when not streamed)
    redirect-301     301/302/303/307/308 to `/ok/v1/chat/completions` on the same server
    echo-key         a 200 answer whose text is the request's Authorization and X-Org headers
    ansi             a 400 error body (and a /models body) with ESC[2J and an OSC title sequence

`h.seen` records (case, method, body length, Authorization) of every chat request.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

HUGE_BYTES = 100 * 2**20
ANSI = "\x1b[2J\x1b]0;owned\x07\x1b[31mred"
_PIECE = "x" * 16_384


class HostileServer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, str | None]] = []
        self.hung_up = 0  # huge answers the client stopped reading
        self._runner: web.AppRunner | None = None
        self.port = 0

    def base_url(self, case: str) -> str:
        return f"http://127.0.0.1:{self.port}/{case}/v1"

    async def __aenter__(self) -> HostileServer:
        app = web.Application()
        app.router.add_route("*", "/{case}/v1/chat/completions", self._chat)
        app.router.add_get("/{case}/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        if request.match_info["case"] == "ansi":
            return web.Response(status=500, text=ANSI)
        return web.json_response({"data": [{"id": "m1"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        case = request.match_info["case"]
        body = await request.read()
        self.seen.append((case, request.method, len(body), request.headers.get("Authorization")))
        stream = bool(body) and json.loads(body).get("stream", False)
        if case.startswith("redirect-"):
            target = f"http://127.0.0.1:{self.port}/ok/v1/chat/completions"
            return web.Response(status=int(case.split("-")[1]), headers={"Location": target})
        if case.startswith("retry-after"):
            value = "inf" if case.endswith("-inf") else "99999"
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": value}
            )
        if case == "ansi":
            return web.Response(status=400, text=f"bad request {ANSI}")
        if case == "huge":
            return await self._huge(request, stream)
        usage: dict[str, Any] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        text = "hello there"
        headers: dict[str, str] = {}
        if case == "usage-huge":
            usage["prompt_tokens"] = 10**30
        elif case == "usage-negative":
            usage["completion_tokens"] = -853
        elif case == "echo-key":
            text = f"you sent {request.headers.get('Authorization')} {request.headers.get('X-Org')}"
        elif case == "reset-huge":
            headers = {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "99999s",
            }
        return await _answer(request, stream, text, usage, headers)

    async def _huge(self, request: web.Request, stream: bool) -> web.StreamResponse:
        """HUGE_BYTES of answer, written in pieces (the server itself stays small)."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream" if stream else "application/json"}
        )
        await response.prepare(request)
        sent = 0
        try:
            if not stream:
                await response.write(b'{"choices": [{"index": 0, "message": {"content": "')
            while sent < HUGE_BYTES:
                if stream:
                    piece = _event({"choices": [{"index": 0, "delta": {"content": _PIECE}}]})
                else:
                    piece = _PIECE.encode()
                await response.write(piece)
                sent += len(piece)
            end = b"data: [DONE]\n\n" if stream else b'"}, "finish_reason": "stop"}]}'
            await response.write(end)
            await response.write_eof()
        except ConnectionError:
            self.hung_up += 1  # the client dropped the connection, as it should
        return response


async def _answer(
    request: web.Request, stream: bool, text: str, usage: dict[str, Any], headers: dict[str, str]
) -> web.StreamResponse:
    if not stream:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response({"choices": [choice], "usage": usage}, headers=headers)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
    await response.prepare(request)
    await response.write(_event({"choices": [{"index": 0, "delta": {"content": text}}]}))
    done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
    await response.write(_event(done) + b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"
