"""What a simulator server saw: tests assert on these counts."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Final

RECENT_BODIES: Final = 64


@dataclass
class SimStats:
    """What the server saw: tests assert on these."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    max_in_flight_by_model: Counter[str] = field(default_factory=Counter)
    in_flight_by_model: Counter[str] = field(default_factory=Counter)
    authorization: set[str] = field(default_factory=set)
    tokenize_requests: int = 0
    # The last chat request bodies, as received (what a client really sent).
    bodies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_BODIES))
