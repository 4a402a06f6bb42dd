"""The exception tree of llamabatch.

    LlamabatchError
    ├── UsageError            bad config, prompt set or command line: exit 2, nothing sent
    │   ├── ConfigError
    │   ├── PromptError
    │   └── StorageError      the results directory cannot be written (disk full): the run stops
    │       └── LeaseLost     another run took over a remote output's lease: the run stops
    └── RequestError          one request attempt failed; becomes a row with status "error"

Third-party exceptions (aiohttp, sockets) are translated into `RequestError` in
`wire/transport.py` and nowhere else. Whether a `RequestError` is retried is decided
by the wire format (`wire/`), which sets `retryable`; `stops_model` marks an error
that every later request to the same endpoint would meet too (a refused connection,
a rejected key, an unknown model), so the engine stops sending to that model.
"""

from __future__ import annotations

from typing import Final

# Exit codes of the command line (design.md): all ok, bad input, some rows failed, interrupted.
EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
EXIT_ROW_ERRORS: Final = 3
EXIT_INTERRUPTED: Final = 130

ERROR_TYPES: Final = frozenset(
    {
        "rate_limit",
        "server",
        "timeout",
        "connection",
        "auth",
        "invalid_request",
        "context_length",
        "not_found",
        "protocol",
        "cancelled",
        "response_too_large",
    }
)


class LlamabatchError(Exception):
    """Base class of every error llamabatch raises on purpose."""


class UsageError(LlamabatchError):
    """The user's input cannot be used as given; the message says what to change."""


class ConfigError(UsageError):
    """A run config is invalid."""


class PromptError(UsageError):
    """A prompt set is invalid."""


def raise_sole_usage_error(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise the UsageError a task group failed with, when it is the only error, as itself.

    A bad setting met inside a task group is one line for the user, not a group.
    """
    usage, rest = group.split(UsageError)
    if usage is not None and rest is None:
        first = usage.exceptions[0]
        if isinstance(first, BaseExceptionGroup):
            raise_sole_usage_error(first)
        raise first from None


class StorageError(UsageError):
    """The results directory cannot be written (disk full, quota, I/O error).

    The run stops admitting work; rows stored before stay stored, and running
    it again (once there is room) resumes. A usage error for the command line:
    one line, exit 2.
    """


class LeaseLost(StorageError):
    """Another run holds the lease of the URI this run writes to (results/remote.py)."""


class RequestError(LlamabatchError):
    """One attempt at one request failed."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        http_status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
        stops_model: bool = False,
    ) -> None:
        assert error_type in ERROR_TYPES, error_type
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.http_status = http_status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.stops_model = stops_model

    def __repr__(self) -> str:
        return (
            f"RequestError({self.error_type!r}, {self.message!r}, http_status={self.http_status})"
        )
