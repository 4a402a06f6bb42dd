"""Interpreter settings for a process that runs the engine: the CLI's, a worker's, a Ray actor's.

What exists when the engine starts (modules, config) lives as long as the
process: frozen, it is not rescanned by every full collection (~15 ms pauses
that delay reading every stream). Each request in flight holds a few dozen
young objects (coroutines, futures, its response); at the default threshold
(700) those of 64 requests alone set off a young collection every ~12
responses, each moving them on to older generations: ~7 % of a run's CPU.

The GIL switch interval goes from 5 ms to 1 ms: the wire's arrival watcher
thread (wire/wireclock.py) waits for the GIL while the loop runs Python, up to
one switch interval per wake. Measured at 1,024 streams on a loaded 2-core
machine (kernel stamp to the watcher's note, p99): 29 and 68 ms with 5 ms, 14
and 14 ms with 1 ms; per-write CPU not worse.

All of it is global state of the process, so set only by the processes
llamabatch owns, never by the library for a host application.
"""

from __future__ import annotations

import gc
import sys
from typing import Final, NamedTuple

# Young objects allowed between two young collections during a run (Python's default: 700).
GC_YOUNG_THRESHOLD: Final = 10_000
# The GIL switch interval during a run (Python's default: 5 ms).
SWITCH_INTERVAL_S: Final = 0.001


class Settings(NamedTuple):
    """What `tune_for_the_engine` changed, as it was before."""

    gc_thresholds: tuple[int, ...]
    switch_interval_s: float


def tune_for_the_engine() -> Settings:
    """Freeze what is loaded, raise the young threshold, shorten the switch interval."""
    gc.freeze()
    before = Settings(gc.get_threshold(), sys.getswitchinterval())
    gc.set_threshold(max(before.gc_thresholds[0], GC_YOUNG_THRESHOLD), *before.gc_thresholds[1:])
    sys.setswitchinterval(min(before.switch_interval_s, SWITCH_INTERVAL_S))
    return before


def restore(before: Settings) -> None:
    """Put back the thresholds and switch interval (frozen objects stay frozen)."""
    gc.set_threshold(*before.gc_thresholds)
    sys.setswitchinterval(before.switch_interval_s)
