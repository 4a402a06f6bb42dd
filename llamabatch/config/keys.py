"""The keys a config may hold, checked before anything else so a typo is named as one.

`provder = "sim"` is reported as an unknown key with a "did you mean provider"
(not as the missing base URL it causes), and `max_token = 32` in `[defaults]`
as an unknown request setting, before any missing-field error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from llamabatch.config.schema import SLO_KEYS, EngineConfig, ModelConfig
from llamabatch.errors import ConfigError
from llamabatch.requestspec import did_you_mean, params_problem

TOP_KEYS: Final = ("run", "engine", "defaults", "models", "scorers", "slo")
RUN_KEYS: Final = (
    "name",
    "input",
    "output",
    "repeats",
    "limit",
    "skip_invalid",
    "chunk_times",
    "mode",
    "cache",
    "cache_ttl",
    "format",
    "columns",
    "first_turn_only",
)
ENGINE_KEYS: Final = tuple(f.name for f in dataclasses.fields(EngineConfig))
# A model's settings are its ModelConfig fields, less those derived from others.
MODEL_KEYS: Final = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("batch",)
)
SLO_TABLE_KEYS: Final = (*SLO_KEYS, "attainment")


def check_keys(data: Mapping[str, Any], path: Path) -> None:
    """Raise one ConfigError naming every unknown key (with a guess), then any bad setting name."""
    unknown = _unknown(data, TOP_KEYS, "")
    for section, known in (("run", RUN_KEYS), ("engine", ENGINE_KEYS), ("slo", SLO_TABLE_KEYS)):
        unknown += _unknown(data.get(section), known, f"{section}.")
    models = data.get("models")
    for index, model in enumerate(models if isinstance(models, list) else ()):
        unknown += _unknown(model, MODEL_KEYS, f"models[{index}].")
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"{path}: unknown key{plural} {', '.join(unknown)}")
    problem = _params_problem(data.get("defaults"), "defaults")
    for index, model in enumerate(models if isinstance(models, list) else ()):
        if isinstance(model, Mapping):
            task = "embed" if model.get("task") == "embed" else "chat"
            where = f"models[{index}].params"
            problem = problem or _params_problem(model.get("params"), where, task)
    if problem:
        raise ConfigError(f"{path}: {problem}")


def _unknown(table: Any, known: tuple[str, ...], prefix: str) -> list[str]:
    if not isinstance(table, Mapping):
        return []  # the section's own check says what it must be
    return [f"{prefix}{k}{did_you_mean(str(k), known)}" for k in table if k not in known]


def _params_problem(params: Any, where: str, task: str = "chat") -> str | None:
    if not isinstance(params, Mapping):
        return None
    return params_problem(params, where, task=task)
