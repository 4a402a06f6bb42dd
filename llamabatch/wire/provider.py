"""What every wire format provides, and the base the JSON chat formats share.

Wire formats are pure: they build requests, turn bytes into `Response`
updates and classify errors. `transport.py` is the only module that does HTTP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from llamabatch.config.schema import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire.request import HttpRequest
from llamabatch.wire.response import Response
from llamabatch.wire.sse import SSEDecoder
from llamabatch.wire.status import status_error


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[bytes]: ...

    def split_all(self, data: bytes) -> tuple[list[bytes], list[int]] | None: ...

    def close(self) -> list[bytes]: ...


class ResponseFormat(Protocol):
    """What the transport needs of a format: framing, parsing, completeness, errors."""

    def decoder(self) -> Decoder: ...

    def handle_batch(self, payloads: list[bytes], times: list[float], resp: Response) -> None: ...

    def parse_body(self, body: bytes, resp: Response, t: float) -> None: ...

    def is_complete(self, resp: Response) -> bool: ...

    def error_for_status(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> RequestError: ...


class Provider(ABC):
    """A wire format: request building, event parsing and error classification.

    The defaults fit formats streamed as SSE whose response ends at a finish
    reason or a terminal marker; a format overrides what differs.
    """

    name: ClassVar[str]

    @abstractmethod
    def build_request(
        self,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> HttpRequest: ...

    @abstractmethod
    def handle_event(self, payload: bytes, resp: Response, t: float) -> None:
        """Apply one streamed event to `resp`; raise RequestError for an error event."""

    @abstractmethod
    def parse_body(self, body: bytes, resp: Response, t: float) -> None:
        """Apply a whole non-streamed response body to `resp` (a whole reply has no TTFT)."""

    def decoder(self) -> Decoder:
        return SSEDecoder()

    def handle_batch(self, payloads: list[bytes], times: list[float], resp: Response) -> None:
        """Apply events in order, `times[i]` being when `payloads[i]` arrived."""
        for payload, t in zip(payloads, times, strict=True):
            self.handle_event(payload, resp, t)

    def is_complete(self, resp: Response) -> bool:
        """True once the format's terminal marker has been seen."""
        return resp.done or resp.finish_reason is not None

    def error_for_status(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> RequestError:
        return status_error(status, headers, body)
