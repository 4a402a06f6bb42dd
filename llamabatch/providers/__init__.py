"""Wire formats, one module each; `provider_for` picks one by the config's `provider`."""

from __future__ import annotations

from llamabatch.providers.base import HttpRequest, Provider, Response
from llamabatch.providers.llama import LlamaProvider
from llamabatch.providers.ollama import OllamaProvider
from llamabatch.providers.openai import OpenAIProvider

_PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "llama": LlamaProvider(),
    "ollama": OllamaProvider(),
    "sim": OpenAIProvider(),  # the simulator speaks the OpenAI format
}


def provider_for(name: str) -> Provider:
    """The wire format registered under `name` (validated by config)."""
    return _PROVIDERS[name]


__all__ = ["HttpRequest", "Provider", "Response", "provider_for"]
