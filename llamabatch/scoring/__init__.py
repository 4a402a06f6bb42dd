"""Scorers and what applies them: per row as a run writes, and over stored results (`rescore`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.scoring.apply import Scoring
    from llamabatch.scoring.rescoring import RescoreReport, rescore
    from llamabatch.scoring.scorers import build_scorer

__getattr__ = lazy_exports(
    __name__,
    {
        "build_scorer": "llamabatch.scoring.scorers",
        "rescore": "llamabatch.scoring.rescoring",
        "RescoreReport": "llamabatch.scoring.rescoring",
        "Scoring": "llamabatch.scoring.apply",
    },
)
__all__ = ["RescoreReport", "Scoring", "build_scorer", "rescore"]
