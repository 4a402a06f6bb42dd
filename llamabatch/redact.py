"""Keep API keys out of everything llamabatch writes or prints."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_KEY_FIELD_RE = re.compile(
    r"""(?i)((?:api[_-]?key|authorization|x-api-key)["']?\s*[:=]\s*["']?)[^\s"',}]{6,}"""
)


class Redactor:
    """Replaces known secrets, bearer tokens and key-looking fields with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)
        return _KEY_FIELD_RE.sub(lambda m: f"{m.group(1)}{MASK}", text)
