"""Keep API keys out of everything llamabatch writes or prints.

One `Redactor` per run (or per command) knows the secrets by value: the keys
from `api_key_env`, secret-named headers, and every `${VAR}` interpolated into
a header, a URL or a key. It is applied to result rows, the manifest, the
`check` table, exception messages and, through a log-record factory, to every
log record created while a run is going (any logger, any handler).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

MASK: Final = "***"
MIN_SECRET_LEN: Final = 4  # shorter values would mask ordinary words
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_KEY_FIELD_RE = re.compile(
    r"""(?i)((?:api[_-]?key|authorization|x-api-key)["']?\s*[:=]\s*["']?)[^\s"',}]{6,}"""
)


class Redactor:
    """Replaces known secrets, bearer tokens and key-looking fields with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        found = {s for s in secrets if len(s) >= MIN_SECRET_LEN}
        self.secrets = tuple(sorted(found, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        """`text` without known secrets, bearer tokens or `api_key=...` values (for messages)."""
        text = self.values(text)
        text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)
        return _KEY_FIELD_RE.sub(lambda m: f"{m.group(1)}{MASK}", text)

    def values(self, text: str) -> str:
        """`text` without the known secrets only (for model output, where `api_key=` is data)."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def data(self, value: Any) -> Any:
        """A copy of plain data (dicts, lists, strings) with every string redacted."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


@contextmanager
def redacted_logs(redactor: Redactor) -> Iterator[None]:
    """Redact every log record created meanwhile, whichever logger or handler it goes to.

    A filter on the `llamabatch` logger would miss its children's records
    (filters do not propagate); a record factory sees every record, and its
    traceback text too, before any handler formats it.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        # A malformed call (bad args) is left for logging to report when it is emitted.
        with contextlib.suppress(TypeError, ValueError):
            record.msg, record.args = redactor(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redactor(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)
