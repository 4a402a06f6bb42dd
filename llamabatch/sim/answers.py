"""Simulated eval answers: reply with a prompt set's `expected` text for a share of prompts.

A profile with `answers` (a JSONL prompt set with `expected`) answers the
prompts it finds there — matched on the text of their user messages — with
the expected text, verbatim, for a deterministic `accuracy` share of them, and
with another prompt's expected answer otherwise (the nearest one after it in
the file that differs, so a wrong answer has the same shape as a right one).
A multi-turn row (`turns`, with a list of `expected`) is answered turn by turn.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from llamabatch.errors import UsageError


@dataclass(frozen=True)
class AnswerTable:
    """Expected answers keyed by prompt text, plus file order for wrong answers."""

    index: Mapping[str, int]
    expected: list[str]


@lru_cache(maxsize=16)
def answer_table(path: str) -> AnswerTable:
    index: dict[str, int] = {}
    expected: list[str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"simulator answers file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise UsageError(f"simulator answers file {path}:{number}: invalid JSON") from None
        for key, answer in _entries(row):
            if key is not None and answer is not None:
                index[key] = len(expected)
                expected.append(str(answer))
    return AnswerTable(index=index, expected=expected)


def _entries(row: Any) -> list[tuple[str | None, Any]]:
    """(key, expected) of a row; one per turn of a multi-turn row."""
    turns = row.get("turns")
    if not isinstance(turns, list):
        messages = row.get("messages") or [{"role": "user", "content": row.get("prompt")}]
        return [(_prompt_key(messages), row.get("expected"))]
    users = [t if isinstance(t, dict) else {"role": "user", "content": t} for t in turns]
    answers = row.get("expected")
    if not isinstance(answers, list):
        answers = [None] * (len(users) - 1) + [answers]
    return [(_prompt_key(users[: i + 1]), answers[i]) for i in range(min(len(users), len(answers)))]


def _prompt_key(messages: Any) -> str | None:
    """The text of every user message, which is how a request is matched to the answers.

    (Other messages are left out: a conversation's replies differ from model to model.)
    """
    if not isinstance(messages, list):
        return None
    texts = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, str):
                return None
            texts.append(content)
    return "\n".join(texts) if texts else None


def table_reply(
    table: AnswerTable, messages: Any, rng: random.Random, accuracy: float
) -> str | None:
    key = _prompt_key(messages)
    position = table.index.get(key) if key is not None else None
    if position is None:
        return None
    right = table.expected[position]
    if rng.random() < accuracy:
        return right
    n = len(table.expected)
    for step in range(1, n):
        other = table.expected[(position + step) % n]
        if other != right:
            return other
    return "I do not know."


def answer_tokens(text: str, max_tokens: Any) -> tuple[list[str], str]:
    """A reply split into word-sized stream pieces that join back exactly, and its finish."""
    pieces = [p for p in re.split(r"(?<=\S)(?=\s)", text) if p] or [text]
    if isinstance(max_tokens, int) and len(pieces) > max_tokens:
        return pieces[: max(1, max_tokens)], "length"
    return pieces, "stop"
