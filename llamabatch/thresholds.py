"""The limits of `llamabatch compare`'s regression rules (light: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When a difference counts as a regression (the defaults are the CLI's)."""

    max_score_drop: float = 0.02
    alpha: float = 0.05
    max_p50_ratio: float = 1.25
    max_p90_ratio: float = 1.5
    min_latency_increase_s: float = 0.05
    max_error_increase: float = 0.02
    max_flips: int | None = None
    latency: bool = True
