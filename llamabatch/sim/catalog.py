"""The simulator's models as each API lists them.

OpenAI's and the Llama API's `/models` and `/models/{id}`; Ollama's
`/api/tags` (what is installed), `/api/show` (one model's details) and
`/api/ps` (what is loaded now). Ollama names carry a tag (`name:latest`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

OWNER: Final = "llamabatch-sim"
MODEL_BYTES: Final = 4_920_000_000  # what a 8B Q4_K_M GGUF weighs
KEEP_ALIVE_S: Final = 300.0  # Ollama unloads a model this long after its last request


def openai_model(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


def openai_list(ids: Iterable[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [openai_model(i, created) for i in ids]}


def ollama_name(model_id: str) -> str:
    return model_id if ":" in model_id else f"{model_id}:latest"


def _details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "8.0B",
        "quantization_level": "Q4_K_M",
    }


def _installed(model_id: str, modified: float) -> dict[str, Any]:
    name = ollama_name(model_id)
    return {
        "name": name,
        "model": name,
        "modified_at": _iso(modified),
        "size": MODEL_BYTES,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": _details(),
    }


def ollama_tags(ids: Iterable[str], modified: float) -> dict[str, Any]:
    return {"models": [_installed(i, modified) for i in ids]}


def ollama_show(model_id: str, modified: float, context_tokens: int) -> dict[str, Any]:
    return {
        "modelfile": f"FROM {ollama_name(model_id)}\n",
        "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": _details(),
        "model_info": {"general.architecture": "llama", "llama.context_length": context_tokens},
        "capabilities": ["completion"],
        "modified_at": _iso(modified),
    }


def ollama_ps(last_used: Mapping[str, float], modified: float) -> dict[str, Any]:
    """The models used within the keep-alive window, as loaded models."""
    now = time.time()
    loaded = []
    for model_id, used in sorted(last_used.items()):
        if now - used < KEEP_ALIVE_S:
            entry = _installed(model_id, modified)
            del entry["modified_at"]
            entry.update(expires_at=_iso(used + KEEP_ALIVE_S), size_vram=MODEL_BYTES)
            loaded.append(entry)
    return {"models": loaded}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
