"""`llamabatch check`, and the quick preflight every `run` starts with.

`check`: for each model, list the server's models (reachable? key accepted?
model listed?), then send one chat request for a single token and time it.
`preflight`: the same model lists only (no chat request), in parallel, with a
short timeout; one line per model that every row would fail for.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import orjson

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.errors import RequestError
from llamabatch.escape import terminal
from llamabatch.redact import Redactor
from llamabatch.runs.servers import local_servers
from llamabatch.wire import HttpRequest, Response, provider_for
from llamabatch.wire.embeddings import EmbeddingResponse, embedding_format_for
from llamabatch.wire.provider import ResponseFormat
from llamabatch.wire.request import auth_headers
from llamabatch.wire.tokenizers import server_root
from llamabatch.wire.transport import Transport

log = logging.getLogger(__name__)
DEFAULT_CHECK_TIMEOUT_S: Final = 30.0
PREFLIGHT_TIMEOUT_S: Final = 5.0
CHECK_MESSAGES: Final = [{"role": "user", "content": "Reply with the single word: OK"}]
CHECK_PARAMS: Final = {"max_tokens": 1, "temperature": 0.0}


@dataclass
class CheckResult:
    """What one model's check found; `ok` is False when its test request failed."""

    model: str
    url: str
    reachable: str = "?"
    key: str = "?"
    listed: str = "?"
    ttft_s: float | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


async def check(
    config: RunConfig, *, timeout_s: float = DEFAULT_CHECK_TIMEOUT_S
) -> list[CheckResult]:
    """Check every model of `config` at once; results in config order."""
    keys = {m.name: m.resolve_api_key() for m in config.models}
    redact = Redactor(config.secrets())
    results: dict[str, CheckResult] = {}
    limit = config.engine.max_response_bytes
    async with Transport(max_response_bytes=limit) as transport, local_servers(config) as started:

        async def one(model: ModelConfig) -> None:
            result = await check_model(transport, model, keys[model.name], timeout_s)
            result.url = redact(result.url)
            if result.problem:
                result.problem = redact(result.problem)
            results[model.name] = result

        async with anyio.create_task_group() as tg:
            for model in started.models:
                tg.start_soon(one, model)
    return [results[m.name] for m in config.models]


async def check_model(
    transport: Transport, model: ModelConfig, api_key: str | None, timeout_s: float
) -> CheckResult:
    result, _ = await list_models(transport, model, api_key, timeout_s)
    if result.reachable == "yes" and result.key != "rejected":
        await _one_token(transport, model, api_key, timeout_s, result)
    return result


async def list_models(
    transport: Transport, model: ModelConfig, api_key: str | None, timeout_s: float
) -> tuple[CheckResult, set[str] | None]:
    """Ask the server for its model list: reachable? key accepted? model listed? (and the ids)."""
    assert model.base_url is not None
    result = CheckResult(model.name, model.base_url, key="-" if not api_key else "?")
    request, parse = models_request(model, api_key)
    try:
        status, body = await transport.fetch(request, timeout_s)
    except RequestError as exc:
        result.reachable, result.problem = "no", f"{exc.error_type}: {exc.message}"
        return result, None
    result.reachable = "yes"
    if status in (401, 403):
        result.key, result.problem = "rejected", f"HTTP {status} from {request.url}"
        return result, None
    ids = None
    if 200 <= status < 300:
        result.key = "ok" if api_key else "-"
        ids = parse(body)
        if ids is not None:
            known = is_listed(model, ids) or await _model_known(transport, model, api_key)
            result.listed = "yes" if known else "no"
    return result, ids


def is_listed(model: ModelConfig, ids: set[str]) -> bool:
    """Whether `ids` holds the model (Ollama lists `name` as `name:latest`)."""
    return model.model in ids or (model.provider == "ollama" and f"{model.model}:latest" in ids)


async def preflight(config: RunConfig, *, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> list[str]:
    """One line per model every request to which would fail: unreachable, key rejected, unknown.

    Only models with a `base_url` are checked (a run starts the others itself);
    no chat request is sent.
    """
    models = [m for m in (*config.models, *config.judge_models) if m.base_url is not None]
    redact = Redactor(config.secrets())
    problems: dict[str, str] = {}
    async with Transport() as transport:

        async def one(model: ModelConfig) -> None:
            problem = await _preflight_model(transport, model, timeout_s)
            if problem is not None:
                problems[model.name] = redact(f"model {model.name!r}: {problem}")

        async with anyio.create_task_group() as tg:
            for model in models:
                tg.start_soon(one, model)
    return [problems[m.name] for m in models if m.name in problems]


async def _preflight_model(
    transport: Transport, model: ModelConfig, timeout_s: float
) -> str | None:
    api_key = model.resolve_api_key()
    result, ids = await list_models(transport, model, api_key, timeout_s)
    if result.reachable == "no":
        return f"cannot reach {result.url}: {result.problem} (is the server up? check base_url)"
    if result.key == "rejected":
        where = f"api_key_env {model.api_key_env}" if model.api_key_env else "the api key"
        return f"key rejected: {result.problem} (check {where})"
    if ids is None or result.listed == "yes":
        return None
    if len(ids) == 1:
        # Single-model servers (llama.cpp, llama-cpp-python) answer whatever name is sent.
        (only,) = ids
        log.warning(
            "%s: %s lists only %r, not %r; sending anyway",
            model.name,
            result.url,
            only,
            model.model,
        )
        return None
    return f"{result.url} does not list model {model.model!r}{_did_you_mean(model.model, ids)}"


async def _model_known(transport: Transport, model: ModelConfig, api_key: str | None) -> bool:
    """Whether the server serves a model its list left out (`/models/{id}`, Ollama's `/api/show`).

    Some list only a few names (aliases, fine-tunes, tags such as Ollama's `:latest`).
    """
    assert model.base_url is not None
    headers = auth_headers(model, api_key)
    if model.provider == "ollama":
        url, body = f"{server_root(model.base_url)}/api/show", orjson.dumps({"model": model.model})
        request = HttpRequest(url=url, headers=headers, body=body, stream=False)
    else:
        url = f"{model.base_url}/models/{model.model}"
        request = HttpRequest(url=url, headers=headers, body=b"", stream=False, method="GET")
    try:
        status, _ = await transport.fetch(request, PREFLIGHT_TIMEOUT_S)
    except RequestError:
        return False
    return 200 <= status < 300


def _did_you_mean(name: str, ids: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(ids), n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    shown = sorted(ids)[:5]
    more = f" and {len(ids) - len(shown)} more" if len(ids) > len(shown) else ""
    return f"; it lists {', '.join(repr(i) for i in shown)}{more}"


async def _one_token(
    transport: Transport,
    model: ModelConfig,
    api_key: str | None,
    timeout_s: float,
    result: CheckResult,
) -> None:
    provider: ResponseFormat
    if model.task == "embed":  # one input to embed; its latency stands for the TTFT
        embedder = provider = embedding_format_for(model.provider)
        request = embedder.build_request(model, ["OK"], model.params, api_key)
        resp: Response = EmbeddingResponse(1)
    else:
        chat = provider = provider_for(model.provider)
        request = chat.build_request(model, list(CHECK_MESSAGES), CHECK_PARAMS, api_key)
        resp = Response()
    try:
        await transport.send(request, provider, resp, timeout_s)
    except RequestError as exc:
        if exc.error_type == "auth":
            result.key = "rejected"
        elif exc.error_type == "not_found":
            result.listed = "no"
        result.problem = f"{exc.error_type}: {exc.message}"
        return
    if api_key:
        result.key = "ok"
    first = resp.first_token_t if resp.first_token_t is not None else resp.ended_t
    result.ttft_s = first - resp.started_t


def models_request(
    model: ModelConfig, api_key: str | None
) -> tuple[HttpRequest, Callable[[bytes], set[str] | None]]:
    """The format's model-list request, and a parser of its answer into model ids."""
    assert model.base_url is not None
    headers = auth_headers(model, api_key)
    if model.provider == "ollama":
        url, key, field = f"{server_root(model.base_url)}/api/tags", "models", "name"
    else:
        url, key, field = f"{model.base_url}/models", "data", "id"

    def parse(body: bytes) -> set[str] | None:
        try:
            data: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        items = data.get(key) if isinstance(data, dict) else data
        if not isinstance(items, list):
            return None
        ids = {str(i.get(field)) for i in items if isinstance(i, dict)}
        return ids | {str(i.get("model")) for i in items if isinstance(i, dict) and "model" in i}

    request = HttpRequest(url=url, headers=headers, body=b"", stream=False, method="GET")
    return request, parse


def format_results(results: Sequence[CheckResult]) -> str:
    """A fixed-width table, one line per model."""
    header = ("model", "endpoint", "reachable", "key", "model listed", "TTFT", "result")
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        ttft = "-" if r.ttft_s is None or math.isnan(r.ttft_s) else f"{r.ttft_s:.3f}s"
        cells = (r.model, r.url, r.reachable, r.key, r.listed, ttft, "ok" if r.ok else "FAIL")
        rows.append(tuple(terminal(c) for c in cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [terminal(f"{r.model}: {r.problem}") for r in results if r.problem]
    return "\n".join(lines)


def run_check(
    config: RunConfig, *, timeout_s: float = DEFAULT_CHECK_TIMEOUT_S
) -> list[CheckResult]:
    """Blocking `check`."""
    return anyio.run(lambda: check(config, timeout_s=timeout_s))
