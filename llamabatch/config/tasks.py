"""A model's task: chat, or embeddings and how many inputs an embeddings request packs."""

from __future__ import annotations

from typing import Any

from llamabatch.config.schema import DEFAULT_BATCH_INPUTS, DEFAULT_BATCH_TOKENS, TASKS
from llamabatch.config.settings import Table


def model_task(sec: Table, provider: str) -> dict[str, Any]:
    """`task` and, for embeddings, how many inputs (and about how many tokens) a request packs."""
    task = sec.one_of("task", TASKS, "chat")
    if task == "embed" and provider == "llama":
        raise sec.error(
            "task",
            "embed needs an openai, ollama or sim provider (the Llama API has no embeddings)",
        )
    settings: dict[str, Any] = {"task": task}
    for key, default in (
        ("batch_inputs", DEFAULT_BATCH_INPUTS),
        ("batch_tokens", DEFAULT_BATCH_TOKENS),
    ):
        value = sec.positive(key, int, default)
        if task != "embed" and value != default:
            raise sec.error(key, 'applies to task = "embed" only')
        settings[key] = value
    return settings
