"""A prompt row checked against the models it goes to: their wire formats and context windows.

A prompt set is valid on its own (`llamabatch validate`); a run also checks
each row against the formats of its chat models (a `developer` message is
OpenAI's, `ipython` the Llama API's; Ollama takes string content only; `seed`
is not a Llama API setting) and a row's own `max_tokens` against each model's
context window, like the configured one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from llamabatch.config import RunConfig
from llamabatch.config.endpoints import MAX_TOKENS_KEYS, max_tokens_problem
from llamabatch.prompts.prompt import Prompt, RowError
from llamabatch.requestspec import messages_problem, params_problem, wire_format


class RowCheck:
    """Raises RowError for a row one of the run's chat models cannot be sent."""

    def __init__(self, config: RunConfig) -> None:
        chat = [m for m in config.models if m.task == "chat"]
        by_format: dict[str, list[str]] = {}
        for model in chat:
            by_format.setdefault(wire_format(model.provider), []).append(model.name)
        self.formats = {fmt: ", ".join(names) for fmt, names in sorted(by_format.items())}
        # Each model's own settings under a row's, for the context-window check.
        self.sized = [(m, {**config.defaults, **m.params}) for m in chat]
        what = {
            "formats": self.formats,
            "models": [(m.name, m.model, m.context_tokens, p) for m, p in self.sized],
        }
        self.signature = hashlib.blake2b(
            orjson.dumps(what, option=orjson.OPT_SORT_KEYS), digest_size=8
        ).hexdigest()

    def __call__(self, prompt: Prompt) -> None:
        for fmt, names in self.formats.items():
            problem = messages_problem(_messages(prompt), fmt)
            if prompt.params and not problem:
                problem = params_problem(prompt.params, provider=fmt)
            if problem:
                raise RowError(f"{problem} (for {fmt} model {names})")
        if prompt.params and not prompt.params.keys().isdisjoint(MAX_TOKENS_KEYS):
            for model, params in self.sized:
                merged: dict[str, Any] = {**params, **prompt.params}
                problem = max_tokens_problem(model.model, merged, model.context_tokens)
                if problem:
                    raise RowError(f"params.{problem} (model {model.name})")


def _messages(prompt: Prompt) -> Iterator[dict[str, Any]]:
    yield from prompt.messages
    for turn in (prompt.turns or [])[1:]:
        yield turn.message
