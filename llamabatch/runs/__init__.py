"""Running things: `run`/`arun`, the servers a run starts, `check`, `sweep`, judges and `score`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.runs.preflight import CheckResult, check, run_check
    from llamabatch.runs.runner import RunResult, arun, run
    from llamabatch.runs.score import score_results

__getattr__ = lazy_exports(
    __name__,
    {
        "arun": "llamabatch.runs.runner",
        "check": "llamabatch.runs.preflight",
        "CheckResult": "llamabatch.runs.preflight",
        "run": "llamabatch.runs.runner",
        "run_check": "llamabatch.runs.preflight",
        "RunResult": "llamabatch.runs.runner",
        "score_results": "llamabatch.runs.score",
    },
)
__all__ = ["CheckResult", "RunResult", "arun", "check", "run", "run_check", "score_results"]
