"""One prompt: a validated row of a prompt set, its stable id and its content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import pyarrow as pa

from llamabatch.requestspec import content_problem, params_problem, role_problem

RESERVED: Final = frozenset({"id", "messages", "prompt", "turns", "system", "params", "expected"})
MASK64: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Turn:
    """One user turn of a multi-turn prompt, and the answer expected to it (if any)."""

    message: dict[str, Any]
    expected: str | None = None


@dataclass(slots=True)
class Prompt:
    """One validated row of a prompt set (treat as read-only).

    Not a frozen dataclass: building a million of them is a resume's hot path,
    and a frozen __init__ costs about four times as much.
    """

    id: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    expected: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    # Multi-turn: every user turn; `messages` is then the head (system) and the first turn.
    turns: list[Turn] | None = None

    def expected_for(self, turn: int | None) -> str | None:
        """The expected answer of one turn (1-based), or of the prompt when it has no turns."""
        if turn is None or self.turns is None:
            return self.expected
        return self.turns[turn - 1].expected


class RowError(Exception):
    """A row's problem; the caller adds where the row is."""


class Undecodable(dict[str, Any]):
    """A row that could not even be decoded; parsing it raises its message."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


def parse_row(row: dict[str, Any]) -> Prompt:
    """The prompt a row describes; raises RowError saying what is wrong with it."""
    if isinstance(row, Undecodable):
        raise RowError(row.message)
    turns = None
    if row.get("turns") is None:
        messages = _messages(row)
    else:
        head, turns = _turns(row)
        messages = [*head, turns[0].message]
    params = row.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise RowError(f"'params' must be an object, got {type(params).__name__}")
    expected = row.get("expected")
    if turns is not None:
        expected = turns[-1].expected
    elif expected is not None and not isinstance(expected, str):
        expected = orjson.dumps(expected).decode()
    content_hash = _content_hash(messages, params, turns)
    params = _checked_params(params)
    prompt_id = row.get("id")
    if prompt_id is None:
        prompt_id = content_hash
    elif isinstance(prompt_id, int) and not isinstance(prompt_id, bool):
        prompt_id = str(prompt_id)
    elif not isinstance(prompt_id, str) or not prompt_id:
        raise RowError(f"'id' must be a non-empty string, got {prompt_id!r}")
    extra = {k: v for k, v in row.items() if k not in RESERVED}
    return Prompt(
        id=prompt_id,
        messages=messages,
        params=params,
        expected=expected,
        extra=extra,
        content_hash=content_hash,
        turns=turns,
    )


def _messages(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = row.get("messages")
    prompt = row.get("prompt")
    system = row.get("system")
    if messages is not None and prompt is not None:
        raise RowError("has both 'messages' and 'prompt'; give exactly one")
    if messages is None and prompt is None:
        text = row.get("text", row.get("input"))
        if isinstance(text, str) and text:
            return [{"role": "user", "content": text}]  # an input to embed (a chat prompt too)
        raise RowError("needs 'messages' (a list), 'prompt' (a string) or, to embed, 'text'")
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt:
            raise RowError("'prompt' must be a non-empty string")
        if system is not None and not isinstance(system, str):
            raise RowError("'system' must be a string")
        head = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": prompt}]
    if system is not None:
        raise RowError("'system' goes with 'prompt'; put it in 'messages' instead")
    if not isinstance(messages, list) or not messages:
        raise RowError("'messages' must be a non-empty list of {role, content}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RowError(f"messages[{i}] must be an object with role and content")
        role = message.get("role")
        if problem := role_problem(role, f"messages[{i}].role"):
            raise RowError(problem)
        content = message.get("content")
        if not isinstance(content, str | list) and not (content is None and role == "assistant"):
            raise RowError(f"messages[{i}].content must be a string or a list of parts")
        if problem := content_problem(content, f"messages[{i}].content"):
            raise RowError(problem)
    # Parquet structs come back with every key; drop the nulls they add.
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def _turns(row: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Turn]]:
    """`turns`: user messages (strings or {role: user, content}), each answered in turn.

    Returns the head (the system message: the `system` field, or a leading
    {role: system} item) and the turns. `expected` is the last turn's answer,
    or a list with one answer (or null) per turn.
    """
    if row.get("messages") is not None or row.get("prompt") is not None:
        raise RowError("has 'turns' and 'messages' or 'prompt'; give exactly one")
    items = row["turns"]
    if not isinstance(items, list) or not items:
        raise RowError("'turns' must be a non-empty list of user messages")
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise RowError("'system' must be a string")
    head = [{"role": "system", "content": system}] if system else []
    if isinstance(items[0], dict) and items[0].get("role") == "system":
        if system is not None:
            raise RowError("has a system turn and 'system'; give one")
        head, items = [{k: v for k, v in items[0].items() if v is not None}], items[1:]
    messages = []
    for i, item in enumerate(items):
        message = {"role": "user", "content": item} if isinstance(item, str) else item
        if not isinstance(message, dict) or message.get("role") != "user":
            raise RowError(f"turns[{i}] must be a string or a {{role: user, content}} object")
        if not isinstance(message.get("content"), str | list) or not message["content"]:
            raise RowError(f"turns[{i}].content must be a non-empty string or a list of parts")
        if problem := content_problem(message["content"], f"turns[{i}].content"):
            raise RowError(problem)
        messages.append({k: v for k, v in message.items() if v is not None})
    if not messages:
        raise RowError("'turns' has no user message")
    expected = _turn_expected(row.get("expected"), len(messages))
    return head, [Turn(m, e) for m, e in zip(messages, expected, strict=True)]


def _turn_expected(expected: Any, n: int) -> list[str | None]:
    if not isinstance(expected, list):
        last = None if expected is None else _text(expected)
        return [None] * (n - 1) + [last]
    if len(expected) != n:
        raise RowError(f"'expected' has {len(expected)} answers for {n} turns")
    return [None if e is None else _text(e) for e in expected]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _checked_params(params: dict[str, Any]) -> dict[str, Any]:
    """A row's request settings, checked; a null one is unset (Parquet structs hold every key)."""
    if not params:
        return params
    if None in params.values():
        params = {k: v for k, v in params.items() if v is not None}
    if problem := params_problem(params):
        raise RowError(problem)
    return params


def id_hash(prompt_id: str) -> int:
    """A prompt id as 64 bits, for compact sets of millions of ids (valid within one process)."""
    return hash(prompt_id) & MASK64


def _content_hash(
    messages: list[dict[str, Any]], params: Mapping[str, Any], turns: list[Turn] | None = None
) -> str:
    content: dict[str, Any] = {"messages": messages, "params": params}
    if turns is not None:
        content["turns"] = [t.message for t in turns]
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


def carried_value(value: Any, arrow_type: pa.DataType) -> Any:
    """A prompt's extra value as stored in its result column."""
    if value is None:
        return None
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return value
