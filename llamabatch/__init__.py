"""llamabatch: an async batch and evaluation runner for LLM chat APIs."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from llamabatch.errors import (
    ConfigError,
    LlamabatchError,
    PromptError,
    RequestError,
    UsageError,
)

if TYPE_CHECKING:
    from llamabatch.config import (
        EngineConfig,
        ModelConfig,
        RunConfig,
        config_from_dict,
        load_config,
    )
    from llamabatch.prompts import Prompt, PromptSet
    from llamabatch.runner import RunResult, arun, run
    from llamabatch.sim import SimProfile, SimServer

# Loaded on first use, so `llamabatch --help` or a run without the simulator
# does not pay for importing every module.
_LAZY = {
    "EngineConfig": "llamabatch.config",
    "ModelConfig": "llamabatch.config",
    "RunConfig": "llamabatch.config",
    "config_from_dict": "llamabatch.config",
    "load_config": "llamabatch.config",
    "Prompt": "llamabatch.prompts",
    "PromptSet": "llamabatch.prompts",
    "RunResult": "llamabatch.runner",
    "arun": "llamabatch.runner",
    "run": "llamabatch.runner",
    "SimProfile": "llamabatch.sim",
    "SimServer": "llamabatch.sim",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llamabatch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ConfigError",
    "EngineConfig",
    "LlamabatchError",
    "ModelConfig",
    "Prompt",
    "PromptError",
    "PromptSet",
    "RequestError",
    "RunConfig",
    "RunResult",
    "SimProfile",
    "SimServer",
    "UsageError",
    "__version__",
    "arun",
    "config_from_dict",
    "load_config",
    "run",
]
