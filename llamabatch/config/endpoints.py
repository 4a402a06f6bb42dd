"""Where models live: endpoint presets, the Meta model catalogue, locally started servers.

A `[[models]]` entry may say `preset = "meta"` and get the base URL, wire
format and key variable filled in; anything it sets itself wins. The
catalogue knows the context window of Meta's models so a `max_tokens` that
cannot fit is refused before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from llamabatch.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class BatchApi:
    """An endpoint's OpenAI-shaped Batch API: its file limits, upload purpose and price."""

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    file_purpose: str = "batch"
    discount: float = 1.0  # the price multiplier batch requests get (0.5 = half price)


OPENAI_BATCH: Final = BatchApi(discount=0.5)


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Settings an endpoint needs: wire format, base URL, key variable, tokenizer, Batch API."""

    provider: str = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    tokenize: str | None = None
    batch: BatchApi | None = None


PRESETS: Final[Mapping[str, Preset]] = {
    "meta": Preset(base_url="https://api.llama.com/compat/v1", api_key_env="META_API_KEY"),
    "meta-native": Preset(
        provider="llama", base_url="https://api.llama.com/v1", api_key_env="META_API_KEY"
    ),
    "openai": Preset(
        base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY", batch=OPENAI_BATCH
    ),
    "ollama": Preset(provider="ollama", base_url="http://localhost:11434"),
    "vllm": Preset(base_url="http://localhost:8000/v1", tokenize="vllm"),
    "llamacpp": Preset(base_url="http://localhost:8080/v1", tokenize="llamacpp"),
    "llama-cpp-python": Preset(base_url="http://localhost:8000/v1", tokenize="llama-cpp-python"),
    "mistral": Preset(base_url="https://api.mistral.ai/v1", api_key_env="MISTRAL_API_KEY"),
    "together": Preset(
        base_url="https://api.together.xyz/v1",
        api_key_env="TOGETHER_API_KEY",
        batch=BatchApi(max_bytes=100 * 1024 * 1024, file_purpose="batch-api", discount=0.5),
    ),
    "groq": Preset(
        base_url="https://api.groq.com/openai/v1",
        api_key_env="GROQ_API_KEY",
        batch=BatchApi(max_bytes=100 * 1024 * 1024, discount=0.75),
    ),
    "hf": Preset(base_url="https://router.huggingface.co/v1", api_key_env="HF_TOKEN"),
}
# No preset: any OpenAI-compatible server may offer the OpenAI Batch API (no discount assumed).
NO_PRESET: Final = Preset(batch=BatchApi())
# The simulator's Batch API: OpenAI's shape and price.
SIM_BATCH: Final = OPENAI_BATCH
# A `server` block starts llama-cpp-python's OpenAI-compatible server.
MANAGED_SERVER: Final = Preset(tokenize="llama-cpp-python")
# Servers whose tokenizer endpoint gives exact counts when a stream reports no usage.
TOKENIZERS: Final = ("llamacpp", "llama-cpp-python", "vllm")

Fail = Callable[[str, str], ConfigError]


def preset_for(name: str | None, fail: Fail) -> Preset:
    """The named preset (or the empty one); `fail(key, message)` builds the config error."""
    if name is None:
        return NO_PRESET
    if name not in PRESETS:
        raise fail("preset", f"must be one of {', '.join(PRESETS)}, got {name!r}")
    return PRESETS[name]


def check_tokenize(kind: str | None, fail: Fail) -> str | None:
    if kind is not None and kind not in TOKENIZERS:
        raise fail("tokenize", f"must be one of {', '.join(TOKENIZERS)}, got {kind!r}")
    return kind


@dataclass(frozen=True)
class CatalogModel:
    """A model of Meta's Llama API with the context window it is served with there."""

    id: str
    context_tokens: int


CATALOG: Final = (
    CatalogModel("Llama-4-Maverick-17B-128E-Instruct-FP8", 131_072),
    CatalogModel("Llama-4-Scout-17B-16E-Instruct-FP8", 131_072),
    CatalogModel("Llama-3.3-70B-Instruct", 131_072),
    CatalogModel("Llama-3.3-8B-Instruct", 131_072),
)
_BY_ID: Final = {m.id.lower(): m for m in CATALOG}
MAX_TOKENS_KEYS: Final = ("max_tokens", "max_completion_tokens", "num_predict")


def catalog_model(model_id: str) -> CatalogModel | None:
    """The catalogue entry for `model_id`, also under a host's prefix (`meta-llama/...`)."""
    return _BY_ID.get(model_id.rsplit("/", 1)[-1].lower())


def max_tokens_problem(
    model_id: str, params: Mapping[str, Any], context_tokens: int | None
) -> str | None:
    """Why `params` ask for more output tokens than the model's context holds, if they do."""
    known = catalog_model(model_id)
    limit = context_tokens or (known.context_tokens if known else None)
    if limit is None:
        return None
    for key in MAX_TOKENS_KEYS:
        value = params.get(key)
        if isinstance(value, int) and value > limit:
            return (
                f"{key} = {value} exceeds the {limit}-token context window of {model_id}; "
                f"lower it to at most {limit}"
            )
    return None


@dataclass(frozen=True, kw_only=True)
class ServerSpec:
    """A llama-cpp-python server that llamabatch starts for one model and stops at the end."""

    gguf: str | None = None
    gguf_package: str | None = None
    chat_format: str | None = None
    n_ctx: int = 2048
    n_threads: int | None = None
    args: tuple[str, ...] = ()
    startup_timeout_s: float = 120.0


def server_spec(data: Mapping[str, Any] | None, fail: Fail) -> ServerSpec | None:
    """Validate a model's `server = {...}` table."""
    if data is None:
        return None
    types: dict[str, type | tuple[type, ...]] = {
        "gguf": str,
        "gguf_package": str,
        "chat_format": str,
        "n_ctx": int,
        "n_threads": int,
        "args": list,
        "startup_timeout_s": (int, float),
    }
    for key, value in data.items():
        if key not in types:
            raise fail(f"server.{key}", f"is not a setting; known: {', '.join(types)}")
        if not isinstance(value, types[key]) or isinstance(value, bool):
            raise fail(f"server.{key}", f"has the wrong type: {value!r}")
    if ("gguf" in data) == ("gguf_package" in data):
        raise fail("server", "needs exactly one of gguf (a .gguf path) or gguf_package")
    args = data.get("args", [])
    if not all(isinstance(a, str) for a in args):
        raise fail("server.args", "must be a list of strings")
    return ServerSpec(**{**data, "args": tuple(args)})
