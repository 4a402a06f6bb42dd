"""Garbage collection for a process that runs the engine: the CLI's, a worker's, a Ray actor's.

What exists when the engine starts (modules, config) lives as long as the
process: frozen, it is not rescanned by every full collection (~15 ms pauses
that delay reading every stream). Each request in flight holds a few dozen
young objects (coroutines, futures, its response); at the default threshold
(700) those of 64 requests alone set off a young collection every ~12
responses, each moving them on to older generations: ~7 % of a run's CPU.
Global state of the process, so set only by the processes llamabatch owns,
never by the library for a host application.
"""

from __future__ import annotations

import gc
from typing import Final

# Young objects allowed between two young collections during a run (Python's default: 700).
GC_YOUNG_THRESHOLD: Final = 10_000


def tune_for_the_engine() -> tuple[int, ...]:
    """Freeze what is loaded and raise the young threshold; the thresholds before."""
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_YOUNG_THRESHOLD), *before[1:])
    return before
