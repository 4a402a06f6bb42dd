"""Package exports loaded on first use, so importing a package costs nothing until it is used.

`llamabatch --help` and a run that never touches the simulator or the
reports would otherwise import every module (aiohttp's server, pandas, ...).
A package lists what it offers once, as name -> module, and imports the same
names under `TYPE_CHECKING` for type checkers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports `exports[name]` on first access."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
