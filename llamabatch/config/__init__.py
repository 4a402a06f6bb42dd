"""Run configuration: load TOML/YAML, interpolate ${VAR}, validate once, freeze.

Also the endpoint presets and model catalogue, and scorer specs as plain data
(the scorer code lives in `llamabatch.scoring`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.config.load import apply_overrides, config_from_dict, load_config
    from llamabatch.config.schema import EngineConfig, ModelConfig, RunConfig
    from llamabatch.config.scorers import ScorerSpec

__getattr__ = lazy_exports(
    __name__,
    {
        "apply_overrides": "llamabatch.config.load",
        "config_from_dict": "llamabatch.config.load",
        "EngineConfig": "llamabatch.config.schema",
        "load_config": "llamabatch.config.load",
        "ModelConfig": "llamabatch.config.schema",
        "RunConfig": "llamabatch.config.schema",
        "ScorerSpec": "llamabatch.config.scorers",
    },
)
__all__ = [
    "EngineConfig",
    "ModelConfig",
    "RunConfig",
    "ScorerSpec",
    "apply_overrides",
    "config_from_dict",
    "load_config",
]
