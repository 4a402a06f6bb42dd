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

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.config.endpoints import MAX_TOKENS_KEYS, catalog_model, max_tokens_problem
from llamabatch.prompts.prompt import Prompt, RowError
from llamabatch.requestspec import (
    CHAT_SETTINGS,
    EXTRA_BODY,
    ROLES,
    messages_problem,
    params_problem,
    wire_format,
)


class RowCheck:
    """Raises RowError for a row one of the run's chat models cannot be sent.

    Called on every row of the validation pass, so the common row (roles and
    settings every format takes, string content, no max_tokens) costs a few
    set lookups; only the others go through each format's checks.
    """

    def __init__(self, config: RunConfig) -> None:
        chat = [m for m in config.models if m.task == "chat"]
        by_format: dict[str, list[str]] = {}
        for model in chat:
            by_format.setdefault(wire_format(model.provider), []).append(model.name)
        self.formats = {fmt: ", ".join(names) for fmt, names in sorted(by_format.items())}
        self.roles = frozenset.intersection(*(ROLES[f] for f in self.formats)) if chat else None
        self.settings = frozenset(
            name
            for name, setting in CHAT_SETTINGS.items()
            if setting.formats.issuperset(self.formats)
        ) | {EXTRA_BODY}
        # Each model's own settings under a row's, for the context-window check.
        self.sized = [(m, {**config.defaults, **m.params}) for m in chat if _has_window(m.model, m)]
        what = {
            "formats": self.formats,
            "models": [(m.name, m.model, m.context_tokens, p) for m, p in self.sized],
        }
        self.signature = hashlib.blake2b(
            orjson.dumps(what, option=orjson.OPT_SORT_KEYS), digest_size=8
        ).hexdigest()

    def __call__(self, prompt: Prompt) -> None:
        if self.roles is None:
            return  # embeddings only: a row is just a text
        params = prompt.params
        if not self._plain(prompt) or (params and not self.settings.issuperset(params)):
            for fmt, names in self.formats.items():
                problem = messages_problem(_messages(prompt), fmt)
                if params and not problem:
                    problem = params_problem(params, provider=fmt)
                if problem:
                    raise RowError(f"{problem} (for {fmt} model {names})")
        if params and self.sized and not params.keys().isdisjoint(MAX_TOKENS_KEYS):
            for model, own in self.sized:
                merged: dict[str, Any] = {**own, **params}
                problem = max_tokens_problem(model.model, merged, model.context_tokens)
                if problem:
                    raise RowError(f"params.{problem} (model {model.name})")

    def _plain(self, prompt: Prompt) -> bool:
        """Every message has a role all the formats take and string content."""
        roles = self.roles
        assert roles is not None
        for message in _messages(prompt):
            if message.get("role") not in roles or message.get("content").__class__ is not str:
                return False
        return True


def _has_window(model_id: str, model: ModelConfig) -> bool:
    return model.context_tokens is not None or catalog_model(model_id) is not None


def _messages(prompt: Prompt) -> Iterator[dict[str, Any]]:
    yield from prompt.messages
    for turn in (prompt.turns or [])[1:]:
        yield turn.message
