"""What a model's connection settings may hold: valid headers, a base URL without credentials."""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

from llamabatch.config.settings import Table

_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_HEADER_VALUE_BAD_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SECRET_PARAM_RE: Final = re.compile(r"(?i)key|token|secret|passw|auth|sig|credential")


def headers(sec: Table) -> dict[str, str]:
    """A model's `headers`: RFC 9110 names, string values without line breaks."""
    found = sec.get("headers", dict, {})
    for key, value in found.items():
        if not _HEADER_NAME_RE.fullmatch(key):
            raise sec.error(f"headers.{key!r}", "is not a valid header name")
        if not isinstance(value, str):
            raise sec.error(f"headers.{key}", "must be a string")
        if _HEADER_VALUE_BAD_RE.search(value):
            # A CR or LF would start a new header (or a body) on the wire.
            raise sec.error(f"headers.{key}", "holds a line break or control character")
    return dict(found)


def check_base_url(url: str, sec: Table) -> None:
    """An http(s) URL without credentials in it (they would be logged and written)."""
    if not url.startswith(("http://", "https://")):
        raise sec.error("base_url", f"must start with http:// or https://, got {_shown(url)!r}")
    if _HEADER_VALUE_BAD_RE.search(url) or " " in url:
        raise sec.error("base_url", "holds a space, line break or control character")
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        raise sec.error(
            "base_url",
            "holds credentials (user:password@); they would be sent as Basic auth and "
            "written to logs: put the key in the variable named by api_key_env instead",
        )
    secret = [k for k, _ in urllib.parse.parse_qsl(parts.query) if _SECRET_PARAM_RE.search(k)]
    if secret:
        raise sec.error(
            "base_url",
            f"carries a credential in its query ({', '.join(secret)}=...): send it as a header "
            "(api_key_env, or headers = {...} with ${VAR}) so it stays out of URLs and logs",
        )


def _shown(url: str) -> str:
    """A URL for an error message: its query and anything up to an `@` (user info) left out."""
    return url.split("?", 1)[0].rsplit("@", 1)[-1]
