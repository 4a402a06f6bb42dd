"""How a simulated model behaves: speed, reply length and fault rates, and the built-in profiles."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SimProfile:
    """How one simulated model behaves: speed, length and fault rates.

    With `answers` (a JSONL prompt set with `expected`), it answers those prompts
    with their expected text for an `accuracy` share of them (see `answers.py`).
    """

    # The `help` of each field is also its `llamabatch sim --<field>` option's help.
    ttft_s: float = field(default=0.2, metadata={"help": "time to first token"})
    tokens_per_s: float = field(default=80.0, metadata={"help": "decode speed"})
    output_tokens: int = field(default=120, metadata={"help": "mean reply length"})
    jitter: float = field(default=0.15, metadata={"help": "relative spread of TTFT and speed"})
    error_rate: float = field(default=0.0, metadata={"help": "fraction answered 503"})
    rate_limit_rate: float = field(default=0.0, metadata={"help": "fraction answered 429"})
    disconnect_rate: float = field(default=0.0, metadata={"help": "fraction cut mid-stream"})
    retry_after_s: float | None = field(
        default=1.0, metadata={"help": "Retry-After of a simulated 429"}
    )
    context_tokens: int = field(
        default=131_072,
        metadata={
            "help": "context window: prompt + max_tokens beyond it is answered 400 (0: none)"
        },
    )
    stream_usage: bool = field(
        default=True, metadata={"help": "token counts in streams (off: like llama-cpp-python)"}
    )
    answers: str | None = field(
        default=None,
        metadata={
            "help": "answer the prompts of this set with their `expected`",
            "metavar": "JSONL",
        },
    )
    accuracy: float = field(
        default=1.0, metadata={"help": "share of --answers prompts answered right"}
    )
    embedding_dims: int = field(
        default=768, metadata={"help": "length of the vectors /v1/embeddings and /api/embed send"}
    )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: SimProfile | None = None) -> SimProfile:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(sorted(unknown))}")
        return replace(base or cls(), **data)


@dataclass(frozen=True)
class BuiltinModel:
    """A model the simulator always serves: matched on `marker` in a model id, listed as `id`."""

    marker: str
    id: str
    profile: SimProfile


BUILTIN_MODELS: tuple[BuiltinModel, ...] = (
    BuiltinModel(
        "maverick",
        "Llama-4-Maverick-17B-128E-Instruct-FP8",
        SimProfile(ttft_s=0.30, tokens_per_s=120.0, output_tokens=110),
    ),
    BuiltinModel(
        "scout",
        "Llama-4-Scout-17B-16E-Instruct-FP8",
        SimProfile(ttft_s=0.22, tokens_per_s=160.0, output_tokens=100),
    ),
    BuiltinModel(
        "70b",
        "Llama-3.3-70B-Instruct",
        SimProfile(ttft_s=0.45, tokens_per_s=55.0, output_tokens=120),
    ),
    BuiltinModel(
        "8b", "Llama-3.1-8B-Instruct", SimProfile(ttft_s=0.12, tokens_per_s=220.0, output_tokens=90)
    ),
)


def builtin_model(model: str) -> BuiltinModel | None:
    """The built-in model a model id names (matched on maverick/scout/70b/8b), if any."""
    lowered = model.lower()
    return next((b for b in BUILTIN_MODELS if b.marker in lowered), None)


def builtin_profile(model: str, default: SimProfile | None = None) -> SimProfile:
    """The speed profile for a model id (matched on maverick/scout/70b/8b), else `default`."""
    builtin = builtin_model(model)
    return builtin.profile if builtin is not None else default or SimProfile()
