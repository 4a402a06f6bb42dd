"""How the prompt file is read: `[run] format`, `columns` and `first_turn_only`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from llamabatch.config.outputs import is_uri
from llamabatch.config.settings import Table
from llamabatch.errors import ConfigError

# The same names as llamabatch.prompts.formats (config cannot import prompts; a test pins them).
INPUT_FORMATS: Final = ("sharegpt", "openai-batch", "alpaca", "rows")
MAPPABLE: Final = ("id", "prompt", "system", "messages", "turns", "params", "expected", "text")


def input_layout(sec: Table) -> dict[str, Any]:
    """The input's format (None: detected), column mapping and ShareGPT turn choice."""
    fmt = sec.get("format", str)
    if fmt is not None and fmt not in INPUT_FORMATS:
        raise sec.error("format", f"must be one of {', '.join(INPUT_FORMATS)}, got {fmt!r}")
    columns = sec.get("columns", dict, {})
    for field, column in columns.items():
        if field not in MAPPABLE:
            raise sec.error(
                f"columns.{field}", f"is not a prompt field; map one of {', '.join(MAPPABLE)}"
            )
        if not isinstance(column, str) or not column:
            raise sec.error(f"columns.{field}", f"must be a column name, got {column!r}")
    sources = list(columns.values())
    if len(set(sources)) != len(sources):
        raise sec.error("columns", "maps one column to two fields")
    first_turn_only = sec.get("first_turn_only", bool, False)
    if first_turn_only and fmt not in (None, "sharegpt"):
        raise sec.error("first_turn_only", f'applies to format = "sharegpt", not {fmt!r}')
    return {"format": fmt, "columns": dict(columns), "first_turn_only": first_turn_only}


def local_input(text: str, setting: str = "run.input") -> Path:
    """The prompt file's path; a URI other than file:// is refused in one line (not read yet)."""
    if not is_uri(text):
        return Path(text)
    parts = urlsplit(text)
    if parts.scheme == "file":
        return Path(parts.path)
    # No user:secret@ and no query (it may hold options): the line goes to terminals and logs.
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    raise ConfigError(
        f"{setting} {shown}: prompt files are read from a local path only; copy it here first "
        f"(e.g. aws s3 cp {shown} prompts.jsonl; for --ray, to the same path on every node)"
    )
