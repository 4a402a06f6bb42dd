"""A lane: everything the engine needs to send requests to one model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.engine.breaker import CircuitBreaker
from llamabatch.engine.coordinator import LeasedAdmission, SharedBreaker
from llamabatch.engine.ratelimit import Admission
from llamabatch.errors import RequestError
from llamabatch.requestspec import merge_params
from llamabatch.wire import Provider, provider_for
from llamabatch.wire.embeddings import EmbeddingFormat, embedding_format_for
from llamabatch.wire.tokenizers import TokenCounter


@dataclass
class Lane:
    """Everything the engine needs to send requests to one model."""

    config: ModelConfig
    provider: Provider
    api_key: str | None
    params: dict[str, Any]
    workers: int
    admission: Admission | LeasedAdmission  # leased: limits shared with other processes
    breaker: CircuitBreaker | SharedBreaker
    counter: TokenCounter | None = None
    params_json: str = "{}"
    embedder: EmbeddingFormat | None = None  # task = "embed": its embeddings API
    stopped: RequestError | None = None  # an error every request would meet: send no more

    def not_sent(self) -> RequestError:
        """The error of a row not sent because the model was stopped."""
        assert self.stopped is not None
        return RequestError(
            self.stopped.error_type,
            f"not sent: {self.config.name} stopped after {self.stopped.message}",
            http_status=self.stopped.http_status,
        )

    @classmethod
    def build(
        cls,
        model: ModelConfig,
        config: RunConfig,
        api_key: str | None,
        render: Callable[[Any], tuple[str, bool]] | None = None,
    ) -> Lane:
        """`render` is the server's chat template, when the client has it (see TokenCounter)."""
        admission, breaker = model_limits(model, config)
        workers = admission.max_concurrency
        embed = model.task == "embed"
        # [defaults] are generation parameters; an embedding model takes its own params only.
        params = dict(model.params) if embed else merge_params(config.defaults, model.params)
        return cls(
            config=model,
            provider=provider_for(model.provider),
            api_key=api_key,
            params=params,
            params_json=orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode(),
            workers=workers,
            admission=admission,
            breaker=breaker,
            counter=None if embed else TokenCounter.for_model(model, api_key, render),
            embedder=embedding_format_for(model.provider) if embed else None,
        )


def model_limits(model: ModelConfig, config: RunConfig) -> tuple[Admission, CircuitBreaker]:
    """A model's admission control and circuit breaker, as the config sets them."""
    workers = min(model.concurrency or config.engine.concurrency, config.engine.concurrency)
    admission = Admission(
        concurrency=workers,
        rpm=model.rpm,
        tpm=model.tpm,
        max_wait_s=config.engine.max_retry_after_s,
    )
    breaker = CircuitBreaker(
        threshold=config.engine.breaker_threshold,
        cooldown_s=config.engine.breaker_cooldown_s,
        max_open_s=config.engine.breaker_max_open_s,
    )
    return admission, breaker
