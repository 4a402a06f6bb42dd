"""Typed, consuming access to a table of settings (config sections, scorer tables)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from llamabatch.errors import ConfigError
from llamabatch.requestspec import did_you_mean

# No setting needs more; larger numbers (and inf, nan) overflow timers and int64 columns.
MAX_NUMBER: Final = 2.0**53


class Table:
    """Each `get` takes a key out and checks its type; what is left over is an error.

    `error` names the setting as `<label><sep><key>`, so every message says
    which file and which setting to change.
    """

    def __init__(self, data: Mapping[str, Any], label: str, *, sep: str = ".") -> None:
        self.data = dict(data)
        self.label = label
        self.sep = sep
        self.asked: list[str] = []  # the keys read, for did-you-mean guesses

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label}{self.sep}{key} {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.asked.append(key)
        value = self.data.pop(key, None)
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value) if abs(value) < MAX_NUMBER else math.inf
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(key, f"must be {names}, got {value!r}")
        if isinstance(value, float) and not abs(value) < MAX_NUMBER:
            raise self.error(key, f"must be a finite number, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_NUMBER:
            raise self.error(key, f"is out of range, got {value!r}")
        return value

    def positive(self, key: str, kind: type, default: Any = None, *, zero: bool = False) -> Any:
        value = self.get(key, kind, default)
        if value is not None and (value < 0 or (value == 0 and not zero)):
            raise self.error(key, f"must be {'>= 0' if zero else '> 0'}, got {value}")
        return value

    def one_of(self, key: str, allowed: Sequence[str], default: str) -> str:
        value: str = self.get(key, str, default)
        if value not in allowed:
            raise self.error(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def leftover(self) -> str:
        """The keys nobody asked for, each with a guess among those asked for ('' when none)."""
        return ", ".join(f"{k}{did_you_mean(k, self.asked)}" for k in sorted(self.data))
