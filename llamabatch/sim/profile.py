"""How a simulated model behaves: speed, reply length and fault rates, and the built-in profiles."""

from __future__ import annotations

import difflib
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
    slots: int = field(
        default=0,
        metadata={"help": "decode slots: requests beyond them queue for one (0: unlimited)"},
    )
    server_tokens_per_s: float = field(
        default=0.0,
        metadata={
            "help": "decode throughput shared by the requests in flight (0: unlimited)",
        },
    )
    prefill_tokens_per_s: float = field(
        default=0.0,
        metadata={"help": "prompt tokens prefilled per second, one prompt at a time (0: free)"},
    )
    error_rate: float = field(default=0.0, metadata={"help": "fraction answered 503"})
    rate_limit_rate: float = field(default=0.0, metadata={"help": "fraction answered 429"})
    disconnect_rate: float = field(default=0.0, metadata={"help": "fraction cut mid-stream"})
    invalid_rate: float = field(
        default=0.0,
        metadata={"help": "fraction answered llama-cpp-python's 500 validation error (final)"},
    )
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
        """A profile from a config's `sim = {...}`; ValueError names a bad key or value."""
        kinds = {f.name: f.type for f in fields(cls)}
        for key, value in data.items():
            if key not in kinds:
                close = difflib.get_close_matches(key, list(kinds), n=1)
                guess = f" (did you mean {close[0]}?)" if close else ""
                raise ValueError(f"sim.{key} is not a simulator setting{guess}")
            if problem := _value_problem(str(kinds[key]), value):
                raise ValueError(f"sim.{key} {problem}")
        return replace(base or cls(), **data)


def _value_problem(kind: str, value: Any) -> str | None:
    """What is wrong with a value for a field annotated `kind` (annotations are strings here)."""
    if value is None:
        return None if "None" in kind else "must be set"
    if kind.startswith("bool"):
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if kind.startswith("str"):
        return None if isinstance(value, str) else f"must be a string, got {value!r}"
    number = int if kind.startswith("int") else (int, float)
    if isinstance(value, bool) or not isinstance(value, number):
        return f"must be {'an integer' if number is int else 'a number'}, got {value!r}"
    if not 0 <= value < 2.0**53:
        return f"must be a finite number >= 0, got {value!r}"
    return None


# What makes a model fast or slow; a built-in model keeps its own, and takes every other
# setting (faults, context window, ...) from the server's default profile.
SPEED_FIELDS = (
    "ttft_s",
    "tokens_per_s",
    "output_tokens",
    "jitter",
    "slots",
    "server_tokens_per_s",
    "prefill_tokens_per_s",
)


@dataclass(frozen=True)
class BuiltinModel:
    """A model the simulator always serves: matched on `marker` in a model id, listed as `id`."""

    marker: str
    id: str
    profile: SimProfile


# Speeds resemble each model's on a shared GPU deployment: one request alone decodes at
# tokens_per_s; together they share server_tokens_per_s over at most `slots` at a time.
BUILTIN_MODELS: tuple[BuiltinModel, ...] = (
    BuiltinModel(
        "maverick",
        "Llama-4-Maverick-17B-128E-Instruct-FP8",
        SimProfile(
            ttft_s=0.30,
            tokens_per_s=120.0,
            output_tokens=110,
            slots=32,
            server_tokens_per_s=1200.0,
            prefill_tokens_per_s=8000.0,
        ),
    ),
    BuiltinModel(
        "scout",
        "Llama-4-Scout-17B-16E-Instruct-FP8",
        SimProfile(
            ttft_s=0.22,
            tokens_per_s=160.0,
            output_tokens=100,
            slots=32,
            server_tokens_per_s=1600.0,
            prefill_tokens_per_s=12000.0,
        ),
    ),
    BuiltinModel(
        "70b",
        "Llama-3.3-70B-Instruct",
        SimProfile(
            ttft_s=0.45,
            tokens_per_s=55.0,
            output_tokens=120,
            slots=16,
            server_tokens_per_s=440.0,
            prefill_tokens_per_s=4000.0,
        ),
    ),
    BuiltinModel(
        "8b",
        "Llama-3.1-8B-Instruct",
        SimProfile(
            ttft_s=0.12,
            tokens_per_s=220.0,
            output_tokens=90,
            slots=64,
            server_tokens_per_s=3500.0,
            prefill_tokens_per_s=20000.0,
        ),
    ),
)


def builtin_model(model: str) -> BuiltinModel | None:
    """The built-in model a model id names (matched on maverick/scout/70b/8b), if any."""
    lowered = model.lower()
    return next((b for b in BUILTIN_MODELS if b.marker in lowered), None)


def builtin_profile(model: str, default: SimProfile | None = None) -> SimProfile:
    """The profile for a model id: a built-in model's speed (maverick/scout/70b/8b) with the
    rest of `default` (its fault rates apply to every model), else `default` itself."""
    builtin = builtin_model(model)
    if builtin is None:
        return default or SimProfile()
    if default is None:
        return builtin.profile
    return replace(default, **{name: getattr(builtin.profile, name) for name in SPEED_FIELDS})
