"""Views across many models and runs: the Pareto frontier of a score against cost and
latency, and the trend of successive runs of one config."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from llamabatch.report.resultset import ResultSet, RunInfo
from llamabatch.report.stats import Estimate


@dataclass(frozen=True)
class ParetoPoint:
    """One model: its mean score, cost per 1,000 prompts and latency p50 (NaN when unknown)."""

    model: str
    score: float
    cost_per_1k: float
    latency_p50_s: float
    best_on_cost: bool  # no other model scores at least as high for less (non-dominated)
    best_on_latency: bool


@dataclass(frozen=True)
class Pareto:
    score: str
    points: list[ParetoPoint]

    @property
    def has_cost(self) -> bool:
        return any(not math.isnan(p.cost_per_1k) for p in self.points)


def non_dominated(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (higher-is-better, lower-is-better) pairs: which no other pair beats on both.

    A pair with a NaN is never on the frontier and never dominates.
    """

    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    usable = [not (math.isnan(x) or math.isnan(y)) for x, y in points]
    return [
        ok and not any(u and beats(q, p) for q, u in zip(points, usable, strict=True))
        for p, ok in zip(points, usable, strict=True)
    ]


def pareto(
    models: pd.DataFrame, scores: Mapping[str, Mapping[str, Estimate]], score: str
) -> Pareto | None:
    """The frontier of `score` against cost and latency over the models table's models."""
    if score not in scores or len(models) < 2:
        return None
    records = models.to_dict("records")
    values = [scores[score][r["model"]].value for r in records]
    cost = [float(r.get("cost_per_1k", math.nan)) for r in records]
    latency = [float(r["latency_p50_s"]) for r in records]
    on_cost = non_dominated(list(zip(values, cost, strict=True)))
    on_latency = non_dominated(list(zip(values, latency, strict=True)))
    points = [
        ParetoPoint(r["model"], v, c, lat, oc, ol)
        for r, v, c, lat, oc, ol in zip(
            records, values, cost, latency, on_cost, on_latency, strict=True
        )
    ]
    if all(math.isnan(p.score) for p in points):
        return None
    return Pareto(score, points)


@dataclass(frozen=True)
class TrendPoint:
    run: int  # index into Trend.runs
    model: str  # the model's name in its config (not its label)
    score: float
    latency_p50_s: float


@dataclass(frozen=True)
class Trend:
    """Successive runs of one config, oldest first, with the baseline run marked."""

    score: str | None
    runs: list[RunInfo]
    baseline: int
    points: list[TrendPoint]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(p.model for p in self.points))


def successive_runs(results: ResultSet) -> list[int] | None:
    """Indexes of the runs oldest first, when they are two or more runs of one config."""
    runs = results.runs
    if len(runs) < 2 or not runs[0].name or any(r.name != runs[0].name for r in runs):
        return None
    return sorted(range(len(runs)), key=lambda i: (runs[i].started_at, i))


def trend(
    results: ResultSet,
    models: pd.DataFrame,
    scores: Mapping[str, Mapping[str, Estimate]],
    score: str | None,
) -> Trend | None:
    """Score and latency p50 per model over successive runs; the baseline is the run whose
    directory is named like one, else the oldest."""
    order = successive_runs(results)
    if order is None:
        return None
    position = {run: i for i, run in enumerate(order)}
    latency = dict(zip(models["model"], models["latency_p50_s"], strict=True))
    points = []
    for label in results.models:  # config order within each run
        run, name = results.model_runs[label]
        value = scores[score][label].value if score is not None and score in scores else math.nan
        points.append(TrendPoint(position[run], name, value, float(latency.get(label, math.nan))))
    points.sort(key=lambda p: p.run)
    runs = [results.runs[i] for i in order]
    baseline = next((i for i, r in enumerate(runs) if "baseline" in r.label.lower()), 0)
    return Trend(score, runs, baseline, points)
