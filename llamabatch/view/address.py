"""Where `llamabatch view` listens by default (apart from the server: the CLI's help needs it)."""

from __future__ import annotations

from typing import Final

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
