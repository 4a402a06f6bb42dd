"""The limits of `llamabatch compare`'s regression rules (light: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When a difference counts as a regression; each field is also a `compare` option."""

    max_score_drop: float = field(
        default=0.02, metadata={"help": "largest tolerated drop of a mean score", "metavar": "D"}
    )
    alpha: float = field(
        default=0.05, metadata={"help": "significance level of the paired test", "metavar": "A"}
    )
    max_p50_ratio: float = field(
        default=1.25,
        metadata={
            "help": "largest tolerated candidate/baseline p50 latency and TTFT",
            "metavar": "R",
        },
    )
    max_p90_ratio: float = field(default=1.5, metadata={"help": "the same for p90", "metavar": "R"})
    min_latency_increase_s: float = field(
        default=0.05,
        metadata={"help": "smaller latency increases never regress", "metavar": "S"},
    )
    max_error_increase: float = field(
        default=0.02,
        metadata={"help": "largest tolerated error-rate rise, 0..1", "metavar": "E"},
    )
    max_flips: int | None = field(
        default=None,
        metadata={"help": "fail when more prompts flip pass -> fail", "metavar": "N"},
    )
    latency: bool = field(default=True, metadata={"help": "apply the latency and TTFT rules"})
