"""The run configuration as immutable values: run, engine and model settings, with defaults."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from llamabatch.config.endpoints import BatchApi, ServerSpec
from llamabatch.config.outputs import CREDENTIAL_ENV
from llamabatch.config.scorers import ScorerSpec
from llamabatch.errors import ConfigError
from llamabatch.redact import Redactor

DEFAULT_CONCURRENCY: Final = 64
MAX_CONCURRENCY: Final = 10_000  # requests in flight; each holds a socket and a worker
DEFAULT_TIMEOUT_S: Final = 120.0
DEFAULT_MAX_RETRIES: Final = 6
DEFAULT_BACKOFF_BASE_S: Final = 0.5
DEFAULT_BACKOFF_MAX_S: Final = 30.0
DEFAULT_MAX_RETRY_AFTER_S: Final = 120.0
DEFAULT_GRACE_S: Final = 10.0
DEFAULT_MAX_RESPONSE_BYTES: Final = 16 * 2**20  # a bigger reply fails its row; memory stays flat
ARRIVALS: Final = ("poisson", "constant")
SLO_KEYS: Final = ("ttft_s", "tpot_s", "latency_s")
DEFAULT_SLO_ATTAINMENT: Final = 0.9
DEFAULT_BREAKER_THRESHOLD: Final = 8
DEFAULT_BREAKER_COOLDOWN_S: Final = 2.0
DEFAULT_BREAKER_MAX_OPEN_S: Final = 300.0
DEFAULT_OUTPUT_ROOT: Final = "results"
DEFAULT_WORKERS: Final = 1  # engine processes; more share the run's limits (issue 16)
MAX_WORKERS: Final = 256
DEFAULT_BATCH_POLL_S: Final = 5.0
DEFAULT_BATCH_POLL_MAX_S: Final = 60.0
DEFAULT_PART_INTERVAL_S: Final = 60.0  # finished rows reach a Parquet part at least this often
DEFAULT_PART_ROWS: Final = 5000  # ...or as soon as this many are waiting
MODES: Final = ("online", "batch")

TASKS: Final = ("chat", "embed")
DEFAULT_BATCH_INPUTS: Final = 64  # embeddings: inputs per request...
DEFAULT_BATCH_TOKENS: Final = 8192  # ...and at most about this many tokens of them
PROVIDERS: Final = ("openai", "llama", "ollama", "sim")
_SECRET_HEADER_RE: Final = re.compile(r"(?i)auth|key|token|secret")
REDACTED: Final = "<redacted>"


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """One model to send every prompt to."""

    name: str
    provider: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)
    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    stream: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    sim: Mapping[str, Any] = field(default_factory=dict)
    tokenize: str | None = None
    context_tokens: int | None = None
    server: ServerSpec | None = None

    usd_per_mtok: Mapping[str, float] = field(default_factory=dict)  # {input, output} prices
    preset: str | None = None
    batch: BatchApi | None = None  # the endpoint's Batch API, when it has one
    batch_discount: float = 1.0  # price multiplier of rows answered through the Batch API
    task: str = "chat"  # or "embed": the embeddings endpoint, inputs packed per request
    batch_inputs: int = DEFAULT_BATCH_INPUTS
    batch_tokens: int = DEFAULT_BATCH_TOKENS

    def resolve_api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key to send, from `api_key_env` (or inline); None when the model needs none."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_env is None:
            return None
        env = os.environ if environ is None else environ
        key = env.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"model {self.name!r}: environment variable {self.api_key_env} is not set "
                f"(api_key_env); export it or remove api_key_env"
            )
        return key


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Limits, timeouts and retry policy of the engine."""

    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S
    grace_s: float = DEFAULT_GRACE_S
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD
    breaker_cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S
    breaker_max_open_s: float = DEFAULT_BREAKER_MAX_OPEN_S
    request_rate: float | None = None  # open loop: new requests per second, per model
    arrival: str = "poisson"  # or "constant"
    arrival_seed: int = 0
    batch_poll_s: float = DEFAULT_BATCH_POLL_S  # batch mode: first wait between polls...
    batch_poll_max_s: float = DEFAULT_BATCH_POLL_MAX_S  # ...doubling up to this
    workers: int = DEFAULT_WORKERS  # processes running the engine, one coordinator's limits
    part_interval_s: float = DEFAULT_PART_INTERVAL_S  # journalled rows -> a part this often
    part_rows: int = DEFAULT_PART_ROWS  # ...or at this many rows


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """The response cache: where it lives, how long entries count, whether to re-ask."""

    path: Path
    ttl_s: float | None = None
    refresh: bool = False


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A whole run: what to read, where to write, which models, how hard to push."""

    name: str
    input: Path
    output: Path  # with `output_uri`: this machine's staging directory (config/outputs.py)
    models: tuple[ModelConfig, ...]
    output_uri: str | None = None  # results on a pyarrow.fs filesystem (s3://...)
    repeats: int = 1
    limit: int | None = None
    skip_invalid: bool = False
    chunk_times: bool = False  # keep each streamed chunk's arrival (chunk_times_s, chunk_tokens)
    engine: EngineConfig = field(default_factory=EngineConfig)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None
    scorers: tuple[ScorerSpec, ...] = ()
    judge_models: tuple[ModelConfig, ...] = ()  # kept whole even when --models narrows `models`
    slo: Mapping[str, float] = field(default_factory=dict)  # ttft_s, tpot_s, latency_s, attainment
    # Values of ${VAR}s interpolated into headers, URLs or keys (see load.py): never written.
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    mode: str = "online"  # or "batch": through each provider's Batch API
    cache: CacheConfig | None = None
    format: str | None = None  # the input's dataset format; None: detected from its content
    columns: Mapping[str, str] = field(default_factory=dict)  # prompt field -> input column
    first_turn_only: bool = False  # ShareGPT: send only the first human turn

    def snapshot(self) -> dict[str, Any]:
        """The config as plain data, without secrets, for the manifest."""
        data = dataclasses.asdict(self)
        del data["secret_values"]
        data["output"] = data.pop("output_uri") or data["output"]
        for model in [*data["models"], *data["judge_models"]]:
            if model.pop("api_key", None) is not None:
                model["api_key"] = REDACTED
            model["headers"] = {
                k: REDACTED if _SECRET_HEADER_RE.search(k) else v
                for k, v in model["headers"].items()
            }
        snapshot: dict[str, Any] = Redactor(self.secrets()).data(_plain(data))
        return snapshot

    def secrets(self) -> tuple[str, ...]:
        """Every API key or secret header value this run may send, for redaction."""
        found: list[str] = []
        for model in (*self.models, *self.judge_models):
            try:
                key = model.resolve_api_key()
            except ConfigError:
                key = None
            if key:
                found.append(key)
            found.extend(v for k, v in model.headers.items() if _SECRET_HEADER_RE.search(k))
        if self.output_uri is not None:  # the filesystem's credentials (config/outputs.py)
            found.extend(v for name in CREDENTIAL_ENV if (v := os.environ.get(name)))
        return (*found, *self.secret_values)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
