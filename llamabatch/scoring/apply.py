"""Apply scorers and prices to result rows as they finish.

During a run, `Scoring.sink` wraps the result writer so each row gets its
`cost_usd` and `score_<name>` values just before it is journalled. Judge
scorers call a model, so they run after the run's requests are done (see
`llamabatch.runs.judge`); `rescore.py` recomputes the same columns over the
Parquet parts of a results directory.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from llamabatch.config import ScorerSpec
from llamabatch.config.scorers import MODEL_SCORERS
from llamabatch.results import Sink
from llamabatch.results.schema import COST_COLUMN, score_column, scoring_fields
from llamabatch.scoring.scorers import Scorer, build_scorer

if TYPE_CHECKING:
    from llamabatch.config import RunConfig

log = logging.getLogger(__name__)
TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass
class Scoring:
    """What is added to each row: its cost and one score per scorer."""

    specs: tuple[ScorerSpec, ...] = ()
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    discounts: Mapping[str, float] = field(default_factory=dict)  # rows with a batch_id
    failures: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._scorers: list[tuple[str, str, Scorer]] = [
            (spec.name, score_column(spec.name), build_scorer(spec))
            for spec in self.specs
            if spec.type not in MODEL_SCORERS
        ]

    @classmethod
    def from_config(cls, config: RunConfig) -> Scoring:
        prices = {
            m.name: (m.usd_per_mtok["input"], m.usd_per_mtok["output"])
            for m in (*config.models, *config.judge_models)
            if m.usd_per_mtok
        }
        discounts = {m.name: m.batch_discount for m in config.models if m.batch_discount != 1}
        return cls(specs=config.scorers, prices=prices, discounts=discounts)

    @property
    def judges(self) -> tuple[ScorerSpec, ...]:
        return tuple(s for s in self.specs if s.type == "judge")

    @property
    def model_scorers(self) -> tuple[ScorerSpec, ...]:
        """Scorers that call a model (judges, similarity): run after a run's own requests."""
        return tuple(s for s in self.specs if s.type in MODEL_SCORERS)

    @property
    def active(self) -> bool:
        return bool(self.specs or self.prices)

    def fields(self) -> list[pa.Field]:
        return scoring_fields(
            [s.name for s in self.specs], [j.name for j in self.judges], cost=bool(self.prices)
        )

    def apply(self, row: dict[str, Any]) -> None:
        """Set the row's cost and (non-judge) scores; a scorer that raises scores None."""
        if self.prices:
            row[COST_COLUMN] = self.cost(row)
        for name, column, scorer in self._scorers:
            try:
                row[column] = scorer(row)
            except Exception as exc:
                row[column] = None
                self.failures[name] += 1
                if self.failures[name] == 1:
                    log.warning("scorer %s failed on %s: %r", name, row.get("prompt_id"), exc)

    def cost(self, row: Mapping[str, Any]) -> float | None:
        price = self.prices.get(row["model"])
        if price is None:
            return None
        tokens_in, tokens_out = row.get("prompt_tokens"), row.get("completion_tokens")
        if (tokens_in is None and price[0]) or (tokens_out is None and price[1]):
            return None  # a count it needs is missing: no cost rather than a low one
        total = (tokens_in or 0) * price[0] + (tokens_out or 0) * price[1]
        if row.get("batch_id"):
            total *= self.discounts.get(row["model"], 1.0)  # the Batch API's price
        return total / TOKENS_PER_PRICE_UNIT

    def sink(self, inner: Sink) -> Sink:
        """`inner` with every row scored before it is written."""
        return _ScoringSink(self, inner) if self.active else inner


@dataclass
class _ScoringSink:
    scoring: Scoring
    inner: Sink

    def write(self, row: dict[str, Any]) -> None:
        self.scoring.apply(row)
        self.inner.write(row)
