"""The wire formats by the name a config's `provider` gives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from llamabatch.wire.llama import LlamaProvider
from llamabatch.wire.ollama import OllamaProvider
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.provider import Provider

_PROVIDERS: Final[Mapping[str, Provider]] = {
    "openai": OpenAIProvider(),
    "llama": LlamaProvider(),
    "ollama": OllamaProvider(),
    "sim": OpenAIProvider(),  # the simulator speaks the OpenAI format
}


def provider_for(name: str) -> Provider:
    """The wire format registered under `name` (validated by config)."""
    return _PROVIDERS[name]
