"""Encoders for untrusted text (server replies, prompt ids, outputs) at the places it is written.

    terminal       control characters shown as escapes: no ESC/OSC sequence reaches a tty
    markdown_cell  one table cell: `|`, backticks, newlines and control characters escaped
    xml_text       only what XML 1.0 allows (ElementTree escapes <, & and quotes itself)

Each replaces what it cannot keep with a visible `\\xNN` / `\\uNNNN` escape, so
nothing is silently lost and nothing can end a cell, a line or a document.
"""

from __future__ import annotations

import re
from typing import Final

# C0 controls except tab and newline, DEL, C1 controls, and the bidirectional
# overrides that make text read differently from what it is ("Trojan source").
_TERMINAL_RE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
# Everything XML 1.0 forbids (its Char production), plus the discouraged C1 range.
_XML_RE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_MD_SPECIAL_RE: Final = re.compile(r"([\\`|<])")  # what can end a cell or start markup


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal(text: str) -> str:
    """`text` with every control character (except tab and newline) shown as an escape."""
    return _TERMINAL_RE.sub(_escape, text)


def markdown_cell(text: str) -> str:
    """`text` as one GitHub-flavoured Markdown table cell: a single line, no markup."""
    text = _MD_SPECIAL_RE.sub(r"\\\1", text)
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return terminal(text)


def xml_text(text: str) -> str:
    """`text` with the characters XML 1.0 cannot hold shown as escapes."""
    return _XML_RE.sub(_escape, text)
