"""A simulated LLM server speaking the OpenAI chat-completions wire format.

It is a real aiohttp server on a loopback port: deterministic text derived
from the prompt and a seed, per-model TTFT / tokens-per-second / length
profiles, and fault knobs (429 with Retry-After, 5xx, mid-stream disconnects,
a server-side RPM limit, scripted faults for tests).

Eval answers: a profile with `answers` (a JSONL prompt set with `expected`)
answers the prompts it finds there — matched on the last user message —
with the expected text, verbatim, for a deterministic `accuracy` share of
them (the draw depends on model, prompt and seed, like the filler text), and
with another prompt's expected answer otherwise (the nearest one after it in
the file that differs, so a wrong answer has the same shape as a right one).
Prompts not in the file get filler text as usual.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from llamabatch.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
SHUTDOWN_TIMEOUT_S = 2.0
_TEXT = (
    "the model answers with a short and careful reply about llamas latency tokens and "
    "batching while the server streams each piece as soon as it is ready for the client "
    "to measure time to first token throughput and the whole response under load"
)
_WORDS = _TEXT.split()


@dataclass(frozen=True, kw_only=True)
class SimProfile:
    """How one simulated model behaves: speed, length and fault rates."""

    ttft_s: float = 0.2
    tokens_per_s: float = 80.0
    output_tokens: int = 120
    jitter: float = 0.15
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    disconnect_rate: float = 0.0
    retry_after_s: float | None = 1.0
    answers: str | None = None  # JSONL with `expected`: answer those prompts (see module doc)
    accuracy: float = 1.0  # share of `answers` prompts answered correctly

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: SimProfile | None = None) -> SimProfile:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(sorted(unknown))}")
        return replace(base or cls(), **data)


BUILTIN_PROFILES: Mapping[str, SimProfile] = {
    "maverick": SimProfile(ttft_s=0.30, tokens_per_s=120.0, output_tokens=110),
    "scout": SimProfile(ttft_s=0.22, tokens_per_s=160.0, output_tokens=100),
    "70b": SimProfile(ttft_s=0.45, tokens_per_s=55.0, output_tokens=120),
    "8b": SimProfile(ttft_s=0.12, tokens_per_s=220.0, output_tokens=90),
}


def builtin_profile(model: str, default: SimProfile | None = None) -> SimProfile:
    """The speed profile for a model id (matched on maverick/scout/70b/8b), else `default`."""
    lowered = model.lower()
    for marker, profile in BUILTIN_PROFILES.items():
        if marker in lowered:
            return profile
    return default or SimProfile()


@dataclass
class SimStats:
    """What the server saw: tests assert on these."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    max_in_flight_by_model: Counter[str] = field(default_factory=Counter)
    in_flight_by_model: Counter[str] = field(default_factory=Counter)
    authorization: set[str] = field(default_factory=set)


class SimServer:
    """Start with `async with SimServer(...) as sim:`; `sim.base_url` ends in /v1."""

    def __init__(
        self,
        *,
        profiles: Mapping[str, SimProfile] | None = None,
        default: SimProfile | None = None,
        seed: int = 0,
        rpm_limit: float | None = None,
        api_key: str | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
    ) -> None:
        self.profiles = dict(profiles or {})
        self.default = default
        self.seed = seed
        self.rpm_limit = rpm_limit
        self.api_key = api_key
        self.host = host
        self.port = port
        self.script: deque[str] = deque()
        self.stats = SimStats()
        self._admitted: deque[float] = deque()
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def profile(self, model: str) -> SimProfile:
        if model in self.profiles:
            return self.profiles[model]
        return builtin_profile(model, self.default)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        return app

    async def start(self) -> None:
        for profile in (*self.profiles.values(), self.default):
            if profile is not None and profile.answers:
                _answer_table(profile.answers)  # a missing or bad file fails here, not per request
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            self._closing.set()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        names = sorted(set(self.profiles) | set(BUILTIN_PROFILES))
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "sim"} for n in names]
        return web.json_response({"object": "list", "data": data})

    def _check_key(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        self.stats.authorization.add(auth)
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return _error(401, "invalid api key", "authentication_error")
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        model = "?"
        try:
            body = await request.json(loads=orjson.loads)
            model = str(body.get("model", "?"))
            stats.by_model[model] += 1
            stats.in_flight_by_model[model] += 1
            stats.max_in_flight_by_model[model] = max(
                stats.max_in_flight_by_model[model], stats.in_flight_by_model[model]
            )
            response = await self._answer(request, body, model)
        except ValueError:
            response = _error(400, "request body is not valid JSON", "invalid_request_error")
        finally:
            stats.in_flight -= 1
            if model != "?":
                stats.in_flight_by_model[model] -= 1
        stats.statuses[response.status] += 1
        return response

    async def _answer(
        self, request: web.Request, body: dict[str, Any], model: str
    ) -> web.StreamResponse:
        if (denied := self._check_key(request)) is not None:
            return denied
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error(400, "'messages' must be a non-empty list", "invalid_request_error")
        profile = self.profile(model)
        action = self.script.popleft() if self.script else self._random_fault(profile)
        if action != "ok":
            return await self._fault(request, action, profile, body, model)
        if (limited := self._rpm_check()) is not None:
            return limited
        plan = _plan(body, profile, self.seed)
        if body.get("stream"):
            return await self._stream(request, body, plan, model, disconnect=False)
        await asyncio.sleep(plan.ttft_s + plan.decode_s)
        return web.json_response(plan.completion(model))

    def _random_fault(self, profile: SimProfile) -> str:
        roll = self._rng.random()
        for action, rate in (
            ("429", profile.rate_limit_rate),
            ("503", profile.error_rate),
            ("disconnect", profile.disconnect_rate),
        ):
            if roll < rate:
                return action
            roll -= rate
        return "ok"

    def _rpm_check(self) -> web.Response | None:
        if self.rpm_limit is None:
            return None
        now = time.monotonic()
        window = self._admitted
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= self.rpm_limit:
            retry_after = 60.0 - (now - window[0])
            return _error(
                429,
                "rate limit exceeded (requests per minute)",
                "rate_limit_exceeded",
                headers={"Retry-After": f"{retry_after:.3f}"},
            )
        window.append(now)
        return None

    async def _fault(
        self,
        request: web.Request,
        action: str,
        profile: SimProfile,
        body: dict[str, Any],
        model: str,
    ) -> web.StreamResponse:
        if action == "429":
            headers = {}
            if profile.retry_after_s is not None:
                headers["Retry-After"] = f"{profile.retry_after_s:g}"
            return _error(429, "rate limit exceeded", "rate_limit_exceeded", headers=headers)
        if action.isdigit():
            return _error(int(action), f"simulated error {action}", "server_error")
        if action == "html502":
            page = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 5000
            return web.Response(status=502, text=page, content_type="text/html")
        if action == "echo-auth":
            auth = request.headers.get("Authorization", "")
            return _error(
                401, f"invalid credentials: Authorization: {auth}", "authentication_error"
            )
        if action == "hang":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await self._closing.wait()
            return response
        if action == "disconnect":
            plan = _plan(body, profile, self.seed)
            return await self._stream(request, body, plan, model, disconnect=True)
        if action in ("error-event", "malformed"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(_sse(_chunk(model, {"role": "assistant", "content": "partial"})))
            if action == "error-event":
                await response.write(
                    _sse({"error": {"message": "overloaded", "type": "server_error", "code": 503}})
                )
            else:
                await response.write(b'data: {"choices": [{"delta": {"content": "x"\n\n')
            await response.write_eof()
            return response
        raise ValueError(f"unknown simulator action {action!r}")

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        plan: _Plan,
        model: str,
        *,
        disconnect: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        start = time.monotonic()
        await response.write(_sse(_chunk(model, {"role": "assistant", "content": ""})))
        per_token = plan.decode_s / max(1, len(plan.tokens) - 1)
        i = 0
        while i < len(plan.tokens):
            due = start + plan.ttft_s + i * per_token
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # Emit every token that is already due in one chunk (keeps fast profiles cheap).
            j = i + 1
            while j < len(plan.tokens) and start + plan.ttft_s + j * per_token <= time.monotonic():
                j += 1
            await response.write(_sse(_chunk(model, {"content": "".join(plan.tokens[i:j])})))
            i = j
            if disconnect and i >= len(plan.tokens) // 2:
                assert request.transport is not None
                request.transport.close()
                return response
        await response.write(_sse(_chunk(model, {}, finish_reason=plan.finish_reason)))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(
                _sse({**_chunk(model, None), "choices": [], "usage": plan.usage()})
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@dataclass(frozen=True)
class _Plan:
    tokens: list[str]
    prompt_tokens: int
    finish_reason: str
    ttft_s: float
    decode_s: float

    def usage(self) -> dict[str, int]:
        n = len(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
        }

    def completion(self, model: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-sim",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.tokens)},
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage(),
        }


def _plan(body: dict[str, Any], profile: SimProfile, seed: int) -> _Plan:
    """Decide the reply: same prompt, model and seed give the same text."""
    messages = body.get("messages") or []
    key = orjson.dumps(
        [body.get("model"), messages, body.get("seed"), seed], option=orjson.OPT_SORT_KEYS
    )
    if body.get("temperature") and body.get("seed") is None:
        key += random.randbytes(8)
    rng = random.Random(hashlib.blake2b(key, digest_size=8).digest())
    mean = max(1, profile.output_tokens)
    length = max(1, round(rng.lognormvariate(math.log(mean), 0.35)))
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(max_tokens, int) and length >= max_tokens:
        length, finish = max_tokens, "length"
    words = [rng.choice(_WORDS) for _ in range(length)]
    tokens = [words[0].capitalize()] + [" " + w for w in words[1:]]
    prompt_tokens = sum(
        len(str(m.get("content", "")).split()) + 4 for m in messages if isinstance(m, dict)
    )
    if profile.answers:
        answer = _table_reply(_answer_table(profile.answers), messages, rng, profile.accuracy)
        if answer is not None:
            tokens, finish = _answer_tokens(answer, max_tokens)
            length = len(tokens)
    jitter = 1.0 + rng.uniform(-profile.jitter, profile.jitter)
    return _Plan(
        tokens=tokens,
        prompt_tokens=prompt_tokens,
        finish_reason=finish,
        ttft_s=profile.ttft_s * jitter,
        decode_s=(length - 1) / profile.tokens_per_s * jitter if profile.tokens_per_s > 0 else 0.0,
    )


def _chunk(
    model: str, delta: dict[str, Any] | None, finish_reason: str | None = None
) -> dict[str, Any]:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    )
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": choices,
    }


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _error(
    status: int, message: str, kind: str, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(
        body, status=status, headers=headers, dumps=lambda o: orjson.dumps(o).decode()
    )


@dataclass(frozen=True)
class _AnswerTable:
    """Expected answers keyed by prompt text, plus file order for wrong answers."""

    index: Mapping[str, int]
    expected: list[str]


@lru_cache(maxsize=16)
def _answer_table(path: str) -> _AnswerTable:
    index: dict[str, int] = {}
    expected: list[str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"simulator answers file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise UsageError(f"simulator answers file {path}:{number}: invalid JSON") from None
        key = _prompt_key(row.get("messages") or [{"role": "user", "content": row.get("prompt")}])
        if key is not None and row.get("expected") is not None:
            index[key] = len(expected)
            expected.append(str(row["expected"]))
    return _AnswerTable(index=index, expected=expected)


def _prompt_key(messages: Any) -> str | None:
    """The last user message's text, which is how a request is matched to the answers."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else None
    return None


def _table_reply(
    table: _AnswerTable, messages: Any, rng: random.Random, accuracy: float
) -> str | None:
    key = _prompt_key(messages)
    position = table.index.get(key) if key is not None else None
    if position is None:
        return None
    right = table.expected[position]
    if rng.random() < accuracy:
        return right
    n = len(table.expected)
    for step in range(1, n):
        other = table.expected[(position + step) % n]
        if other != right:
            return other
    return "I do not know."


def _answer_tokens(text: str, max_tokens: Any) -> tuple[list[str], str]:
    """A reply split into word-sized stream pieces that join back exactly, and its finish."""
    pieces = [p for p in re.split(r"(?<=\S)(?=\s)", text) if p] or [text]
    if isinstance(max_tokens, int) and len(pieces) > max_tokens:
        return pieces[: max(1, max_tokens)], "length"
    return pieces, "stop"
