"""llamabatch: an async batch and evaluation runner for LLM chat APIs.

The packages, bottom to top (each may import only those below it):
config, prompts, sim -> wire -> results -> engine -> scoring -> report -> runs
-> cli. See README, "How it fits together".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports
from llamabatch._version import __version__
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
    from llamabatch.engine import Observer
    from llamabatch.prompts import Prompt, PromptSet
    from llamabatch.runs import RunResult, arun, run
    from llamabatch.sim import SimProfile, SimServer

# Loaded on first use, so `llamabatch --help` or a run without the simulator
# does not pay for importing every module.
__getattr__ = lazy_exports(
    __name__,
    {
        "EngineConfig": "llamabatch.config",
        "ModelConfig": "llamabatch.config",
        "RunConfig": "llamabatch.config",
        "config_from_dict": "llamabatch.config",
        "load_config": "llamabatch.config",
        "Observer": "llamabatch.engine",
        "Prompt": "llamabatch.prompts",
        "PromptSet": "llamabatch.prompts",
        "RunResult": "llamabatch.runs",
        "arun": "llamabatch.runs",
        "run": "llamabatch.runs",
        "SimProfile": "llamabatch.sim",
        "SimServer": "llamabatch.sim",
    },
)

__all__ = [
    "ConfigError",
    "EngineConfig",
    "LlamabatchError",
    "ModelConfig",
    "Observer",
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
