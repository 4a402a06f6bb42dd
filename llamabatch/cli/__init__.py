"""The `llamabatch` command: argument parsing, exit codes and the progress bar."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.cli.commands import main

__getattr__ = lazy_exports(
    __name__,
    {
        "main": "llamabatch.cli.commands",
    },
)
__all__ = ["main"]
