"""Scheduling: per-model lanes, work queues, rate limits, retries, circuit breakers, self-check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.engine.engine import Engine, Observer
    from llamabatch.engine.lane import Lane

__getattr__ = lazy_exports(
    __name__,
    {
        "Engine": "llamabatch.engine.engine",
        "Lane": "llamabatch.engine.lane",
        "Observer": "llamabatch.engine.engine",
    },
)
__all__ = ["Engine", "Lane", "Observer"]
