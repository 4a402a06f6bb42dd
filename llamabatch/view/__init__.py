"""`llamabatch view`: a local web app to browse runs, rows, prompts and comparisons."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.view.server import build_app, serve

__getattr__ = lazy_exports(
    __name__,
    {
        "build_app": "llamabatch.view.server",
        "serve": "llamabatch.view.server",
    },
)
__all__ = ["build_app", "serve"]
