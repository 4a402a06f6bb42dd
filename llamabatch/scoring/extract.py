"""Pull answers out of free text: normalised strings, numbers, choice letters, JSON."""

from __future__ import annotations

import re
import string
from typing import Any, Final

import orjson

_SPACE_RE: Final = re.compile(r"\s+")
_PUNCT: Final = str.maketrans("", "", string.punctuation)
_NUMBER_RE: Final = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
)
_FENCE_RE: Final = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def normalise(
    text: str, *, ignore_case: bool, ignore_whitespace: bool, ignore_punctuation: bool
) -> str:
    """Text with the chosen differences removed (punctuation first, then case, then spacing)."""
    if ignore_punctuation:
        text = text.translate(_PUNCT)
    if ignore_case:
        text = text.casefold()
    if ignore_whitespace:
        text = _SPACE_RE.sub(" ", text).strip()
    return text


def numbers(text: str) -> list[float]:
    """Every number written in `text` (thousands separators allowed), in order."""
    found = []
    for match in _NUMBER_RE.finditer(text):
        try:
            found.append(float(match.group().replace(",", "")))
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
    return found


def number(text: str, pick: str = "last") -> float | None:
    """The first or last number in `text`, or None."""
    found = numbers(text)
    if not found:
        return None
    return found[0] if pick == "first" else found[-1]


def choice(text: str, letters: str) -> str | None:
    """The multiple-choice letter a reply commits to, or None when it names none clearly.

    Tried in order: "answer is X" / "answer: X", a reply that starts with the
    letter ("B", "B)", "(B) ...", "B. ..."), then a lone "(X)" anywhere, then a
    reply that mentions exactly one candidate letter standing alone.
    """
    cls = "[" + re.escape(letters) + "]"
    patterns = (
        rf"(?i:answer)\s*(?:is|:)?\s*(?:option\s*)?\(?({cls})\)?(?![A-Za-z])",
        rf"^\s*\(?({cls})(?:[).:\s]|$)",
        rf"\(({cls})\)",
    )
    for pattern in patterns:
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            return match.group(1)
    alone = set(re.findall(rf"(?<![A-Za-z])({cls})(?![A-Za-z])", text))
    return alone.pop() if len(alone) == 1 else None


def json_value(text: str, *, extract: bool) -> tuple[bool, Any]:
    """(parsed, value): the reply as JSON; with `extract`, from a code fence or the outer braces."""
    candidates = [text]
    if extract:
        candidates += _FENCE_RE.findall(text)
        for open_, close in ("{}", "[]"):
            start, end = text.find(open_), text.rfind(close)
            if 0 <= start < end:
                candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return True, orjson.loads(candidate.strip())
        except orjson.JSONDecodeError:
            continue
    return False, None
