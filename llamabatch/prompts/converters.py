"""Turning one record of a known dataset format into a prompt row (`id`, `messages`, ...).

Each converter takes a fresh copy of the record and returns the row that
`parse_row` validates; it raises `RowError` for a record its format cannot
describe. Columns the format does not use are carried through unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from llamabatch.prompts.prompt import RowError
from llamabatch.requestspec import IMPORT_DROPPED_PARAMS

Row = dict[str, Any]

# ShareGPT speakers as chat roles. The public dumps say human/gpt (and system);
# later exports and tools also write user/assistant or the assistant's name.
SHAREGPT_ROLES: Final = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}
# The config decides these, not an OpenAI Batch file's body.
BATCH_DROPPED: Final = IMPORT_DROPPED_PARAMS


def sharegpt(row: Row, *, first_turn_only: bool) -> Row:
    """`conversations` -> the messages up to the last (or first) human turn; the gpt reply
    after it -> `expected`."""
    messages = _conversation(row.pop("conversations", None))
    system = row.pop("system", None)
    head = 1 if isinstance(system, str) and system else 0
    if head:
        messages.insert(0, {"role": "system", "content": system})
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise RowError("the conversation has no human turn")
    ask = users[0] if first_turn_only else users[-1]
    if not messages[ask]["content"].strip():
        raise RowError(f"conversations[{ask - head}] is empty (the human turn to send)")
    if first_turn_only:
        prompt = [m for m in messages[:ask] if m["role"] == "system"] + [messages[ask]]
    else:
        prompt = messages[: ask + 1]
    after = messages[ask + 1] if ask + 1 < len(messages) else None
    if after is not None and after["role"] == "assistant" and row.get("expected") is None:
        row["expected"] = after["content"]
    row["messages"] = prompt
    return row


def _conversation(turns: Any) -> list[dict[str, Any]]:
    if not isinstance(turns, list) or not turns:
        raise RowError("'conversations' must be a non-empty list of {from, value}")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"conversations[{i}] must be an object with 'from' and 'value'")
        speaker = turn.get("from", turn.get("role"))
        role = SHAREGPT_ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            raise RowError(f"conversations[{i}].from is {speaker!r}; expected human, gpt or system")
        text = turn.get("value", turn.get("content"))
        if not isinstance(text, str):
            raise RowError(f"conversations[{i}].value must be a string")
        messages.append({"role": role, "content": text})
    return messages


def openai_batch(row: Row, *, dropped: Counter[str]) -> Row:
    """One line of an OpenAI Batch input file: `custom_id` -> id, `body.messages` -> messages,
    the rest of `body` -> params (less what the config decides, counted in `dropped`)."""
    method = row.pop("method", None)
    if method is not None and str(method).upper() != "POST":
        raise RowError(f"method is {method!r}; a chat request is a POST")
    url = row.pop("url", None)
    if url is not None and not str(url).rstrip("/").endswith("/chat/completions"):
        raise RowError(f"url {url!r} is not a chat completions request (/v1/chat/completions)")
    body = row.pop("body", None)
    if not isinstance(body, dict):
        raise RowError("'body' must be an object (the request)")
    params = dict(body)
    messages = params.pop("messages", None)
    if messages is None:
        raise RowError("body.messages is missing")
    for key in BATCH_DROPPED:
        if key in params:
            del params[key]
            dropped[key] += 1
    if type(params.get("n")) is int and params["n"] == 1:  # one sample: what is sent anyway
        del params["n"]
        dropped["n"] += 1
    row["id"] = row.pop("custom_id", None)
    row["messages"] = messages
    if params:
        row["params"] = params
    return row


def alpaca(row: Row) -> Row:
    """`instruction` (+ a blank line + `input`, when given) -> prompt; `output` -> expected."""
    instruction = row.pop("instruction", None)
    text = row.pop("input", None)
    output = row.pop("output", None)
    if not isinstance(instruction, str) or not instruction.strip():
        raise RowError("'instruction' must be a non-empty string")
    if text is not None and not isinstance(text, str):
        raise RowError("'input' must be a string")
    row["prompt"] = f"{instruction}\n\n{text}" if text and text.strip() else instruction
    if output not in (None, "") and row.get("expected") is None:
        row["expected"] = output
    return row


def rows(row: Row) -> Row:
    """Prompt rows need no conversion."""
    return row


def converter(fmt: str, *, first_turn_only: bool, dropped: Counter[str]) -> Callable[[Row], Row]:
    """The conversion of one format."""
    if fmt == "sharegpt":
        return lambda row: sharegpt(row, first_turn_only=first_turn_only)
    if fmt == "openai-batch":
        return lambda row: openai_batch(row, dropped=dropped)
    if fmt == "alpaca":
        return alpaca
    return rows
