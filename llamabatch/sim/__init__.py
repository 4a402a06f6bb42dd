"""The simulated LLM server: speaks the OpenAI, Llama API and Ollama formats; knows no client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.sim.profile import SimProfile, builtin_profile
    from llamabatch.sim.server import SimServer

__getattr__ = lazy_exports(
    __name__,
    {
        "builtin_profile": "llamabatch.sim.profile",
        "SimProfile": "llamabatch.sim.profile",
        "SimServer": "llamabatch.sim.server",
    },
)
__all__ = ["SimProfile", "SimServer", "builtin_profile"]
