"""HTTP and the wire formats: build a request, parse the bytes, classify the response.

`transport.Transport` is the only code that does HTTP; every wire format
(`openai`, `llama`, `ollama`) is pure and picked by `provider_for`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.wire.formats import provider_for
    from llamabatch.wire.provider import Provider
    from llamabatch.wire.request import HttpRequest
    from llamabatch.wire.response import Response
    from llamabatch.wire.transport import Transport

__getattr__ = lazy_exports(
    __name__,
    {
        "HttpRequest": "llamabatch.wire.request",
        "Provider": "llamabatch.wire.provider",
        "provider_for": "llamabatch.wire.formats",
        "Response": "llamabatch.wire.response",
        "Transport": "llamabatch.wire.transport",
    },
)
__all__ = ["HttpRequest", "Provider", "Response", "Transport", "provider_for"]
