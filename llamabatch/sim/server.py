"""A simulated LLM server speaking the OpenAI, Llama API and Ollama wire formats.

It is a real aiohttp server on a loopback port: deterministic text derived
from the prompt and a seed, per-model TTFT / tokens-per-second / length
profiles, and fault knobs (429 with Retry-After, 5xx, mid-stream disconnects,
a server-side RPM limit, scripted faults for tests). Paths:

    /v1/chat/completions, /v1/models              OpenAI-compatible
    /llama/v1/chat/completions, /llama/v1/models  Meta's native Llama API
    /api/chat, /api/tags                          Ollama
    /tokenize, /extras/tokenize/count             llama.cpp / vLLM, llama-cpp-python
    /v1/embeddings, /api/embed                    embeddings (`embeddings.py`)

`profile.py` holds each model's speed and fault rates, `capacity.py` how it
slows under load, `plan.py` decides a reply, `formats.py` writes its bytes in
each format, and `answers.py` lets a profile answer eval prompts correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Mapping
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from llamabatch.sim import catalog, embeddings, replies
from llamabatch.sim.answers import answer_table
from llamabatch.sim.batches import SimBatches
from llamabatch.sim.capacity import Deployment
from llamabatch.sim.formats import LLAMA, OLLAMA, OPENAI, SimFormat
from llamabatch.sim.plan import (
    Plan,
    count_tokens,
    make_plan,
    prompt_token_count,
    render_template,
)
from llamabatch.sim.profile import BUILTIN_MODELS, SimProfile, builtin_model, builtin_profile
from llamabatch.sim.stats import SimStats

DEFAULT_HOST = "127.0.0.1"
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
SHUTDOWN_TIMEOUT_S = 2.0
LLAMA_PREFIX = "/llama/v1"


class SimServer:
    """Start with `async with SimServer(...) as sim:`; `sim.base_url` ends in /v1."""

    def __init__(
        self,
        *,
        profiles: Mapping[str, SimProfile] | None = None,
        default: SimProfile | None = None,
        seed: int = 0,
        rpm_limit: float | None = None,
        rpm_window_s: float = 60.0,
        rate_headers: bool = True,
        api_key: str | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
    ) -> None:
        self.profiles = dict(profiles or {})
        self.default = default
        self.seed = seed
        self.rpm_limit = rpm_limit
        self.rpm_window_s = rpm_window_s
        self.rate_headers = rate_headers
        self._waiters: list[tuple[int, asyncio.Event]] = []
        self.api_key = api_key
        self.host = host
        self.port = port
        self.script: deque[str] = deque()
        self.stats = SimStats()
        self.started = time.time()
        self._last_used: dict[str, float] = {}  # model -> when it last answered (Ollama's ps)
        self.batches = SimBatches(self.profile, seed)  # the Batch API: sim/batches.py
        self._admitted: deque[float] = deque()
        self._rngs: dict[str, random.Random] = {}
        self._deployments: dict[str, Deployment] = {}
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base (`provider = "openai"`)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def llama_base_url(self) -> str:
        """The native Llama API base (`provider = "llama"`)."""
        return f"http://{self.host}:{self.port}{LLAMA_PREFIX}"

    @property
    def root_url(self) -> str:
        """The server root: Ollama's base (`provider = "ollama"`)."""
        return f"http://{self.host}:{self.port}"

    def serves(self, model: str) -> bool:
        """A model it has a profile for; any model at all when it has a `default` profile."""
        name = model.removesuffix(":latest")
        return name in self.profiles or self.default is not None or builtin_model(name) is not None

    def profile(self, model: str) -> SimProfile:
        name = model.removesuffix(":latest")
        if name in self.profiles:
            return self.profiles[name]
        return builtin_profile(name, self.default)

    def model_ids(self) -> list[str]:
        """What its model lists show: the profiles it was given and the built-in models."""
        return sorted(set(self.profiles) | {b.id for b in BUILTIN_MODELS})

    def app(self) -> web.Application:
        app = web.Application()
        add_post, add_get = app.router.add_post, app.router.add_get
        add_post("/v1/chat/completions", partial(self._chat, fmt=OPENAI))
        add_post(f"{LLAMA_PREFIX}/chat/completions", partial(self._chat, fmt=LLAMA))
        add_post("/api/chat", partial(self._chat, fmt=OLLAMA))
        for prefix in ("/v1", LLAMA_PREFIX):
            add_get(f"{prefix}/models", self._models)
            add_get(prefix + "/models/{model:.+}", self._model)
        add_get("/api/tags", self._tags)
        add_post("/api/show", self._show)
        add_get("/api/ps", self._ps)
        add_post("/tokenize", self._tokenize)
        add_post("/apply-template", self._apply_template)
        add_post("/extras/tokenize/count", self._tokenize_count)
        add_get("/health", self._health)
        self.batches.add_routes(app)
        embeddings.add_routes(app, self)
        return app

    async def start(self) -> None:
        for profile in (*self.profiles.values(), self.default):
            if profile is not None and profile.answers:
                answer_table(profile.answers)  # a missing or bad file fails here, not per request
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

    async def wait_for_requests(self, n: int) -> None:
        """Return once the server has received `n` chat requests (for tests)."""
        if self.stats.requests >= n:
            return
        event = asyncio.Event()
        self._waiters.append((n, event))
        await event.wait()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        return web.json_response(catalog.openai_list(self.model_ids(), int(self.started)))

    async def _model(self, request: web.Request) -> web.Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        model = request.match_info["model"]
        if not self.serves(model):
            return replies.unknown_model(model, OPENAI)
        return web.json_response(catalog.openai_model(model, int(self.started)))

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response(catalog.ollama_tags(self.model_ids(), self.started))

    async def _show(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        model = str(body.get("model") or body.get("name") or "")
        if not self.serves(model):
            return replies.unknown_model(model, OLLAMA)
        context = self.profile(model).context_tokens
        return web.json_response(catalog.ollama_show(model, self.started, context))

    async def _ps(self, request: web.Request) -> web.Response:
        return web.json_response(catalog.ollama_ps(self._last_used, self.started))

    async def _tokenize(self, request: web.Request) -> web.Response:
        """llama.cpp (`content`) and vLLM (`prompt` or `messages`) tokenizers."""
        body = await request.json(loads=orjson.loads)
        self.stats.tokenize_requests += 1
        if "content" in body:
            return web.json_response({"tokens": list(range(count_tokens(body["content"])))})
        text = body.get("prompt")
        if text is None:
            text = render_template(body["messages"])
        n = count_tokens(text)
        return web.json_response({"count": n, "max_model_len": 8192, "tokens": list(range(n))})

    async def _apply_template(self, request: web.Request) -> web.Response:
        """llama.cpp's: the prompt its chat template makes of `messages`."""
        body = await request.json(loads=orjson.loads)
        return web.json_response({"prompt": render_template(body["messages"])})

    async def _tokenize_count(self, request: web.Request) -> web.Response:
        """llama-cpp-python's counter, which (like the real one) counts a BOS token too."""
        body = await request.json(loads=orjson.loads)
        self.stats.tokenize_requests += 1
        return web.json_response({"count": 1 + count_tokens(body["input"])})

    def _check_key(self, request: web.Request, fmt: SimFormat = OPENAI) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        self.stats.authorization.add(auth)
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return replies.bad_key(fmt)
        return None

    def note_request(self) -> None:
        """Count a request to a model endpoint (what `wait_for_requests` waits for)."""
        self.stats.requests += 1
        for n, event in self._waiters:
            if self.stats.requests >= n:
                event.set()

    async def _chat(self, request: web.Request, *, fmt: SimFormat) -> web.StreamResponse:
        stats = self.stats
        self.note_request()
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        model = "?"
        try:
            body = await request.json(loads=orjson.loads)
            stats.bodies.append(body)
            model = str(body.get("model", "?"))
            stats.by_model[model] += 1
            stats.in_flight_by_model[model] += 1
            stats.max_in_flight_by_model[model] = max(
                stats.max_in_flight_by_model[model], stats.in_flight_by_model[model]
            )
            response = await self._answer(request, body, model, fmt)
        except ValueError:
            response = replies.bad_request("request body is not valid JSON", fmt)
        finally:
            stats.in_flight -= 1
            if model != "?":
                stats.in_flight_by_model[model] -= 1
        stats.statuses[response.status] += 1
        return response

    async def _answer(
        self, request: web.Request, body: dict[str, Any], model: str, fmt: SimFormat
    ) -> web.StreamResponse:
        if (denied := self._check_key(request, fmt)) is not None:
            return denied
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return replies.bad_request("'messages' must be a non-empty list", fmt)
        roles = {m.get("role") for m in body["messages"] if isinstance(m, dict)}
        if roles - ROLES:
            return replies.validation_500(sorted(map(str, roles - ROLES))[0], fmt)
        if not self.serves(model):
            return replies.unknown_model(model, fmt)
        self._last_used[model] = time.time()
        profile = self.profile(model)
        max_tokens = fmt.max_tokens(body)
        prompt_tokens = prompt_token_count(body["messages"])
        wanted = prompt_tokens + (max_tokens if isinstance(max_tokens, int) else 0)
        if profile.context_tokens and max(wanted, prompt_tokens + 1) > profile.context_tokens:
            return replies.too_long(
                prompt_tokens, wanted - prompt_tokens, profile.context_tokens, fmt
            )
        action = self.script.popleft() if self.script else self._random_fault(model, profile)
        if action != "ok":
            return await self._fault(request, action, profile, body, model, fmt)
        if (limited := self._rpm_check(fmt)) is not None:
            return limited
        plan = make_plan(body, profile, self.seed, fmt.max_tokens(body), choices=fmt is OPENAI)
        # Ollama streams unless told not to; the other formats only when asked.
        if body.get("stream", fmt is OLLAMA):
            return await self._stream(request, body, plan, model, fmt, profile)
        async with contextlib.aclosing(self.deployment(model).generate(plan)) as tokens:
            async for _ in tokens:
                pass
        return web.json_response(fmt.completion(model, plan), headers=self._budget_headers())

    def deployment(self, model: str) -> Deployment:
        """The model's capacity (slots, prefill lane, shared decode throughput): `capacity.py`."""
        name = model.removesuffix(":latest")
        if (found := self._deployments.get(name)) is None:
            found = self._deployments[name] = Deployment(self.profile(name))
        return found

    def _random_fault(self, model: str, profile: SimProfile) -> str:
        # One random stream per model: how many of a model's requests fail does not
        # depend on how its requests interleave with other models'.
        rng = self._rngs.setdefault(model, random.Random(f"{self.seed}:{model}"))
        roll = rng.random()
        for action, rate in (
            ("429", profile.rate_limit_rate),
            ("503", profile.error_rate),
            ("disconnect", profile.disconnect_rate),
            ("validation500", profile.invalid_rate),
        ):
            if roll < rate:
                return action
            roll -= rate
        return "ok"

    def _rpm_check(self, fmt: SimFormat) -> web.Response | None:
        """A sliding-window request limit, advertised in OpenAI-style x-ratelimit-* headers."""
        if self.rpm_limit is None:
            return None
        now = time.monotonic()
        window = self._admitted
        while window and now - window[0] >= self.rpm_window_s:
            window.popleft()
        limit = int(self.rpm_limit)
        if len(window) >= limit:
            reset = self.rpm_window_s - (now - window[0])
            headers = self._rate_headers(0, reset)
            headers["Retry-After"] = f"{reset:.3f}"
            return replies.rate_limited(fmt, headers, "Rate limit reached for requests per minute")
        window.append(now)
        return None

    def _rate_headers(self, remaining: int, reset_s: float) -> dict[str, str]:
        if not self.rate_headers:
            return {}
        return {
            "x-ratelimit-limit-requests": str(int(self.rpm_limit or 0)),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": f"{reset_s:.3f}s",
        }

    def _budget_headers(self) -> dict[str, str]:
        if self.rpm_limit is None:
            return {}
        window = self._admitted
        reset = self.rpm_window_s - (time.monotonic() - window[0]) if window else 0.0
        return self._rate_headers(max(0, int(self.rpm_limit) - len(window)), reset)

    async def _fault(
        self,
        request: web.Request,
        action: str,
        profile: SimProfile,
        body: dict[str, Any],
        model: str,
        fmt: SimFormat,
    ) -> web.StreamResponse:
        if action == "429":
            headers = {}
            if profile.retry_after_s is not None:
                headers["Retry-After"] = f"{profile.retry_after_s:g}"
            return replies.rate_limited(fmt, headers)
        if action.isdigit():
            return replies.by_status(int(action), fmt)
        if action == "validation500":
            return replies.validation_500("wizard", fmt)
        if action == "html502":
            page = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 5000
            return web.Response(status=502, text=page, content_type="text/html")
        if action == "echo-auth":
            auth = request.headers.get("Authorization", "")
            return replies.bad_key(fmt, f"invalid credentials: Authorization: {auth}")
        if action == "redirect":
            raise web.HTTPTemporaryRedirect(location=f"{request.path}?redirected=1")
        if action == "trickle":
            response = web.StreamResponse(headers={"Content-Type": fmt.content_type})
            await response.prepare(request)
            for byte in fmt.delta(model, "slow"):
                await response.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._closing.wait()
                if self._closing.is_set():
                    break
            return response
        if action == "hang":
            response = web.StreamResponse(headers={"Content-Type": fmt.content_type})
            await response.prepare(request)
            await self._closing.wait()
            return response
        if action == "disconnect":
            plan = make_plan(body, profile, self.seed, fmt.max_tokens(body))
            return await self._stream(request, body, plan, model, fmt, profile, disconnect=True)
        if action in ("error-event", "malformed"):
            response = web.StreamResponse(headers={"Content-Type": fmt.content_type})
            await response.prepare(request)
            await response.write(fmt.opening(model) + fmt.delta(model, "partial"))
            await response.write(fmt.error_event() if action == "error-event" else fmt.malformed())
            await response.write_eof()
            return response
        raise ValueError(f"unknown simulator action {action!r}")

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        plan: Plan,
        model: str,
        fmt: SimFormat,
        profile: SimProfile,
        *,
        disconnect: bool = False,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": fmt.content_type,
                "Cache-Control": "no-cache",
                **self._budget_headers(),
            }
        )
        await response.prepare(request)
        if opening := fmt.opening(model, plan):
            await response.write(opening)
        sent = 0
        async with contextlib.aclosing(self.deployment(model).generate(plan)) as tokens:
            async for produced in tokens:
                choices = [(i, c.tokens[sent:produced]) for i, c in enumerate(plan.choices)]
                deltas = [fmt.delta(model, "".join(t), plan, i) for i, t in choices if t]
                await response.write(b"".join(deltas))
                sent = produced
                if disconnect and sent >= plan.length // 2:
                    assert request.transport is not None
                    request.transport.close()
                    return response
        await response.write(fmt.closing(model, plan, body, profile.stream_usage))
        await response.write_eof()
        return response
