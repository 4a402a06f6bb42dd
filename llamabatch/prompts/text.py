"""What chat messages say as plain text, and roughly how many tokens that is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

CHARS_PER_TOKEN: Final = 4.0

Messages = Sequence[Mapping[str, Any]]


def content_text(content: Any) -> str:
    """A message's text: its content string, or the `text` of each of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def messages_text(messages: Messages) -> str:
    """Every message's text, one after another (what a tokenizer is asked to count)."""
    return "\n".join(content_text(m.get("content")) for m in messages if isinstance(m, Mapping))


def transcript(messages: Messages) -> str:
    """Messages for a person (or a judge) to read, one `[role] text` line each."""
    return "\n".join(f"[{m.get('role')}] {content_text(m.get('content'))}" for m in messages)


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) when the server gives none."""
    return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0


def estimate_prompt_tokens(messages: Messages) -> int:
    """A rough token count of what the messages say."""
    chars = 0
    for m in messages:  # per request: a plain loop, and no ABC check for a plain dict
        if m.__class__ is dict or isinstance(m, Mapping):
            content = m.get("content")
            chars += len(content) if content.__class__ is str else len(content_text(content))
    return round(chars / CHARS_PER_TOKEN)


def embedding_input(extra: Mapping[str, Any], messages: Messages) -> str:
    """What an embedding model embeds of a prompt: its `text` (or `input`) column, else the
    text of its last user message."""
    for column in ("text", "input"):
        value = extra.get(column)
        if isinstance(value, str) and value:
            return value
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    return content_text(users[-1].get("content")) if users else messages_text(messages)
