"""llamabatch: an async batch and evaluation runner for LLM chat APIs."""

from __future__ import annotations

__version__ = "0.1.0"

from llamabatch.config import EngineConfig, ModelConfig, RunConfig, config_from_dict, load_config
from llamabatch.errors import (
    ConfigError,
    LlamabatchError,
    PromptError,
    RequestError,
    UsageError,
)
from llamabatch.prompts import Prompt, PromptSet
from llamabatch.runner import RunResult, arun, run
from llamabatch.sim import SimProfile, SimServer

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
