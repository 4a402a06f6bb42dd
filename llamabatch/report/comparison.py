"""`llamabatch compare`: a candidate run against a baseline, by regression rules.

Rows are matched by (model, prompt_id, sample, turn), with baseline models renamed
through `--map`. Per model, each rule compares only the matched rows:

- `score:<name>`: the mean per-prompt score dropped by more than
  `max_score_drop` *and* a paired sign-flip test on the shared prompts gives
  p < `alpha` (so noise on a small set does not fail a build);
- `latency_p50`, `latency_p90`, `ttft_p50`, `ttft_p90`: the candidate's
  percentile over rows ok in both is more than the ratio above the
  baseline's, and at least `min_latency_increase_s` more in seconds;
- `error_rate`: the error rate rose by more than `max_error_increase`;
- `flips` (only with `max_flips`): more prompts than that went from pass to fail.

Prompts that flipped from pass to fail are always listed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llamabatch.config import ScorerSpec
from llamabatch.config.scorers import specs_from_snapshot
from llamabatch.errors import UsageError
from llamabatch.report import resultset as rs
from llamabatch.report.stats import paired_diff, quantile_ratio
from llamabatch.report.thresholds import Thresholds
from llamabatch.results import read_manifest
from llamabatch.results.schema import SCORE_PREFIX

KEY = [rs.PROMPT_ID, rs.SAMPLE]
LATENCY_RULES = (
    ("latency_p50", rs.LATENCY, 0.5),
    ("latency_p90", rs.LATENCY, 0.9),
    ("ttft_p50", rs.TTFT, 0.5),
    ("ttft_p90", rs.TTFT, 0.9),
)


@dataclass(frozen=True)
class RuleResult:
    model: str
    rule: str
    regressed: bool
    baseline: float
    candidate: float
    change: str
    limit: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Flip:
    model: str
    score: str
    prompt_id: str
    baseline: float
    candidate: float


@dataclass
class Comparison:
    baseline: Path
    candidate: Path
    thresholds: Thresholds
    pairs: list[tuple[str, str]] = field(default_factory=list)
    matched: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, tuple[int, int]] = field(default_factory=dict)
    rules: list[RuleResult] = field(default_factory=list)
    flips: list[Flip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(r.regressed for r in self.rules)


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """`old=new` pairs from --map."""
    mapping: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"--map {item!r}: expected OLD=NEW (baseline model=candidate model)")
        mapping[old] = new
    return mapping


def compare(
    baseline: Path,
    candidate: Path,
    *,
    mapping: Mapping[str, str] | None = None,
    thresholds: Thresholds | None = None,
) -> Comparison:
    """Apply every rule to every baseline model; raises UsageError on unusable input."""
    base, cand = rs.read_results_dir(baseline), rs.read_results_dir(candidate)
    result = Comparison(baseline, candidate, thresholds or Thresholds())
    specs = {**_specs(baseline), **_specs(candidate)}
    for old, new in _model_pairs(base, cand, mapping or {}, baseline, candidate):
        label = old if old == new else f"{old}→{new}"
        result.pairs.append((old, new))
        b = base[base[rs.MODEL] == old]
        c = cand[cand[rs.MODEL] == new]
        key = [*KEY, rs.TURN] if rs.TURN in b and rs.TURN in c else KEY
        merged = b.merge(c, on=key, suffixes=("_b", "_c"))
        result.matched[label] = len(merged)
        result.unmatched[label] = (len(b) - len(merged), len(c) - len(merged))
        if merged.empty:
            raise UsageError(
                f"model {label}: no (prompt_id, sample) in common "
                f"between {baseline} and {candidate}"
            )
        result.rules.append(_error_rule(label, merged, result.thresholds))
        if result.thresholds.latency:
            result.rules += _latency_rules(label, merged, result.thresholds)
        _score_rules(result, label, merged, specs, b.columns, c.columns)
    return result


def _specs(path: Path) -> dict[str, ScorerSpec]:
    snapshot = (read_manifest(path) or {}).get("config") or {}
    return {s.name: s for s in specs_from_snapshot(snapshot)}


def _model_pairs(
    base: pd.DataFrame,
    cand: pd.DataFrame,
    mapping: Mapping[str, str],
    baseline: Path,
    candidate: Path,
) -> list[tuple[str, str]]:
    present = set(base[rs.MODEL])
    snapshot = (read_manifest(baseline) or {}).get("config") or {}
    ordered = [m["name"] for m in snapshot.get("models") or [] if m.get("name") in present]
    base_models = ordered + sorted(present - set(ordered))
    cand_models = set(cand[rs.MODEL])
    for old, new in mapping.items():
        if old not in base_models:
            raise UsageError(f"--map {old}={new}: no model {old!r} in {baseline}")
        if new not in cand_models:
            raise UsageError(f"--map {old}={new}: no model {new!r} in {candidate}")
    pairs = []
    for old in base_models:
        new = mapping.get(old, old)
        if new not in cand_models:
            raise UsageError(
                f"model {old!r} of {baseline} has no rows in {candidate}; "
                f"if it was renamed, add --map {old}=NEW"
            )
        pairs.append((old, new))
    return pairs


def _error_rule(label: str, merged: pd.DataFrame, t: Thresholds) -> RuleResult:
    rate_b = float((merged[rs.STATUS + "_b"] != rs.OK).mean())
    rate_c = float((merged[rs.STATUS + "_c"] != rs.OK).mean())
    increase = rate_c - rate_b
    return RuleResult(
        model=label,
        rule="error_rate",
        regressed=increase > t.max_error_increase,
        baseline=rate_b,
        candidate=rate_c,
        change=f"{increase * 100:+.1f} points",
        limit=f"rise ≤ {t.max_error_increase * 100:.1f} points",
        details={"increase": increase, "rows": len(merged)},
    )


def _latency_rules(label: str, merged: pd.DataFrame, t: Thresholds) -> list[RuleResult]:
    both_ok = merged[(merged[rs.STATUS + "_b"] == rs.OK) & (merged[rs.STATUS + "_c"] == rs.OK)]
    rules = []
    for rule, column, q in LATENCY_RULES:
        a = both_ok[column + "_b"].to_numpy(np.float64)
        b = both_ok[column + "_c"].to_numpy(np.float64)
        keep = ~(np.isnan(a) | np.isnan(b))
        if not keep.any():
            continue
        a, b = a[keep], b[keep]
        qa, qb = float(np.quantile(a, q)), float(np.quantile(b, q))
        ratio = quantile_ratio(a, b, q)
        limit = t.max_p50_ratio if q == 0.5 else t.max_p90_ratio
        regressed = qa > 0 and qb / qa > limit and qb - qa >= t.min_latency_increase_s
        rules.append(
            RuleResult(
                model=label,
                rule=rule,
                regressed=bool(regressed),
                baseline=qa,
                candidate=qb,
                change=f"×{ratio.value:.2f} [{ratio.low:.2f}, {ratio.high:.2f}]",
                limit=f"≤ ×{limit:g} (or < +{t.min_latency_increase_s:g}s)",
                details={"ratio": ratio.value, "ci": [ratio.low, ratio.high], "rows": ratio.n},
            )
        )
    return rules


def _score_rules(
    result: Comparison,
    label: str,
    merged: pd.DataFrame,
    specs: Mapping[str, ScorerSpec],
    base_columns: pd.Index,
    cand_columns: pd.Index,
) -> None:
    names_b = {c[len(SCORE_PREFIX) :] for c in base_columns if c.startswith(SCORE_PREFIX)}
    names_c = {c[len(SCORE_PREFIX) :] for c in cand_columns if c.startswith(SCORE_PREFIX)}
    for name in sorted(names_b ^ names_c):
        side = "baseline" if name in names_b else "candidate"
        result.notes.append(f"{label}: score {name!r} is only in the {side}; not compared")
    for name in sorted(names_b & names_c):
        spec = specs.get(name) or ScorerSpec(name=name, type="unknown")
        base_scores = _reduced(merged, name, "_b", spec)
        cand_scores = _reduced(merged, name, "_c", spec)
        shared = base_scores.index.intersection(cand_scores.index)
        if shared.empty:
            continue
        a, b = base_scores.loc[shared], cand_scores.loc[shared]
        result.rules.append(_score_rule(label, name, a, b, result.thresholds))
        flipped = sorted(shared[(a >= spec.pass_threshold) & (b < spec.pass_threshold)])
        result.flips += [
            Flip(label, name, str(p), float(a.loc[p]), float(b.loc[p])) for p in flipped
        ]
    if result.thresholds.max_flips is not None:
        result.rules.append(_flips_rule(result, label))


def _reduced(merged: pd.DataFrame, name: str, suffix: str, spec: ScorerSpec) -> pd.Series:
    column = SCORE_PREFIX + name
    frame = pd.DataFrame(
        {
            rs.MODEL: "m",
            rs.PROMPT_ID: merged[rs.PROMPT_ID],
            rs.SAMPLE: merged[rs.SAMPLE],
            column: merged[column + suffix],
        }
    )
    if rs.TURN in merged:
        frame[rs.TURN] = merged[rs.TURN]  # a conversation's turns are reduced per prompt
    scores = rs.prompt_scores(frame, name, spec)
    return scores.droplevel(0) if len(scores) else scores


def _score_rule(label: str, name: str, a: pd.Series, b: pd.Series, t: Thresholds) -> RuleResult:
    test = paired_diff(a.to_numpy(np.float64), b.to_numpy(np.float64))
    mean_a, mean_b = float(a.mean()), float(b.mean())
    diff = mean_b - mean_a
    d = test.diff
    ci = f" [{d.low:+.3f}, {d.high:+.3f}]" if not math.isnan(d.low) else ""
    wtl = f"{test.wins}/{test.ties}/{test.losses}"
    return RuleResult(
        model=label,
        rule=f"score:{name}",
        regressed=-diff > t.max_score_drop and test.p_value < t.alpha,
        baseline=mean_a,
        candidate=mean_b,
        change=f"{diff + 0.0:+.3f}{ci}, p={test.p_value:.3g}, W/T/L {wtl}",
        limit=f"drop ≤ {t.max_score_drop:g} or p ≥ {t.alpha:g}",
        details={
            "diff": diff,
            "ci": [d.low, d.high],
            "p_value": test.p_value,
            "prompts": d.n,
            "wins": test.wins,
            "ties": test.ties,
            "losses": test.losses,
        },
    )


def _flips_rule(result: Comparison, label: str) -> RuleResult:
    count = sum(1 for f in result.flips if f.model == label)
    limit = result.thresholds.max_flips or 0
    return RuleResult(
        model=label,
        rule="flips",
        regressed=count > limit,
        baseline=0.0,
        candidate=float(count),
        change=f"{count} prompt(s) pass → fail",
        limit=f"≤ {limit}",
    )
