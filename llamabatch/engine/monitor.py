"""The client watching itself: event-loop lag, CPU and memory of the run's process.

A benchmark client whose event loop is busy reports its own queueing as the
server's TTFT. The monitor wakes every `INTERVAL_S`; how late it wakes is the
loop's lag. A run whose lag p99 exceeds `LAG_WARN_MS`, or whose process used
nearly a whole core, is flagged `client_bound`, and its summary says so.
A run in worker processes adds up its processes (`combine`); every report
says where its figures come from (`sources`).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

INTERVAL_S: Final = 0.05
LAG_WARN_MS: Final = 10.0
CPU_WARN: Final = 0.9  # share of one core
MAX_SAMPLES: Final = 100_000


@dataclass
class LoopMonitor:
    """Run `watch()` in the run's task group; `report()` summarises what it saw."""

    lags_ms: list[float] = field(default_factory=list)
    _wall0: float = field(default_factory=time.perf_counter)
    _cpu0: float = field(default_factory=time.process_time)

    async def watch(self) -> None:
        while True:
            before = time.perf_counter()
            await anyio.sleep(INTERVAL_S)
            lag = (time.perf_counter() - before - INTERVAL_S) * 1e3
            if len(self.lags_ms) < MAX_SAMPLES:
                self.lags_ms.append(max(0.0, lag))

    def report(self, *, sent: int = 1) -> dict[str, Any]:
        """Lag, CPU and memory; a run that sent nothing produced no figures to distrust."""
        wall = time.perf_counter() - self._wall0
        cpu = time.process_time() - self._cpu0
        lags = sorted(self.lags_ms)

        def pct(q: float) -> float:
            return round(lags[min(len(lags) - 1, int(q * len(lags)))], 2) if lags else 0.0

        util = cpu / wall if wall > 0 else 0.0
        return {
            "loop_lag_p50_ms": pct(0.5),
            "loop_lag_p99_ms": pct(0.99),
            "loop_lag_max_ms": round(lags[-1], 2) if lags else 0.0,
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "cpu_share": round(util, 3),
            "max_rss_mb": round(peak_rss_mb(), 1),
            "client_bound": sent > 0
            and (pct(0.99) > LAG_WARN_MS or (util > CPU_WARN and wall > 1.0)),
            "sources": ONE_PROCESS,
        }


ONE_PROCESS: Final = {
    "loop_lag": "this process's event loop, which times the requests",
    "cpu_s": "this process (user + system)",
    "max_rss_mb": "this process's peak resident memory",
}
LAG_FIELDS: Final = ("loop_lag_p50_ms", "loop_lag_p99_ms", "loop_lag_max_ms")


def combine(parent: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A run's figures over its parent and its worker processes (`parent`: `report()`).

    Each worker's `cpu_s` is the kernel's account of it when it was reaped
    (start-up included, also for a worker that was killed); its lag and peak
    memory are what its own monitor reported at exit (none for a killed one).
    The workers' loops time the requests: the worst one's lag is the run's.
    """
    lagged = [w for w in workers if w.get("loop_lag_p99_ms") is not None]
    # One process's CPU not measured (a killed Ray actor's): the total is not known either.
    known = [w["cpu_s"] for w in workers if w.get("cpu_s") is not None]
    cpu = parent["cpu_s"] + sum(known) if len(known) == len(workers) else None
    wall = parent["wall_s"]
    lag = {f: max(w[f] for w in lagged) for f in LAG_FIELDS} if lagged else {}
    return {
        **{f: parent[f] for f in LAG_FIELDS},
        **lag,
        "cpu_s": None if cpu is None else round(cpu, 3),
        "wall_s": wall,
        "cpu_share": None if cpu is None else round(cpu / wall, 3) if wall > 0 else 0.0,
        "max_rss_mb": round(
            parent["max_rss_mb"] + sum(w.get("max_rss_mb") or 0 for w in workers), 1
        ),
        "client_bound": any(w.get("client_bound") for w in workers),
        "processes": 1 + len(workers),
        "sources": {
            "loop_lag": "the worker processes' event loops, which time the requests: the "
            "highest of each percentile over the workers",
            "cpu_s": "the parent process and every worker process, each worker's from the "
            "kernel when it exited (user + system, start-up included, killed ones too); "
            "cpu_share is cpu_s over the run's wall time, in cores",
            "max_rss_mb": "the sum of each process's peak resident memory (a killed "
            "worker's is not known)",
            "client_bound": "any worker's own flag (loop lag p99 or its CPU share of a core)",
        },
        "parent": dict(parent),
        "workers": [dict(w) for w in workers],
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory.

    Linux's VmHWM rather than `ru_maxrss`, which also counts the memory a
    parent process had when it forked this one.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here
