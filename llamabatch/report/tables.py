"""`llamabatch report`: per-model tables and pairwise comparisons, as data and as Markdown."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from llamabatch.errors import UsageError
from llamabatch.escape import markdown_cell
from llamabatch.report import resultset as rs
from llamabatch.report.across import Pareto, Trend, pareto, trend
from llamabatch.report.embeddings import embedding_section, embedding_summary
from llamabatch.report.headline import headline
from llamabatch.report.resultset import ResultSet
from llamabatch.report.stats import (
    Estimate,
    PairedDiff,
    mean_ci,
    paired_diff,
    pass_at_k,
    quantile_ratio,
)
from llamabatch.report.summary import UNPRICED, at_least, cost_total, summarize
from llamabatch.report.timing import itl_distribution, itl_section
from llamabatch.results.remote import shown
from llamabatch.results.schema import SCORE_PREFIX

ALPHA = 0.05


@dataclass(frozen=True)
class ScorePair:
    """Model b against model a on one score, over the prompts both answered."""

    score: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    result: PairedDiff

    @property
    def verdict(self) -> str:
        if self.result.diff.n == 0:
            return "no shared prompts"
        if not self.result.significant(ALPHA):
            return "not significant"
        return f"{self.b if self.result.diff.value > 0 else self.a} better"


@dataclass(frozen=True)
class LatencyPair:
    """Ratio b / a of per-prompt median latency and TTFT, on prompts both answered."""

    a: str
    b: str
    latency: Estimate
    ttft: Estimate

    @property
    def verdict(self) -> str:
        if self.latency.n == 0:
            return "no shared prompts"
        if not self.latency.excludes(1.0):
            return "not significant"
        return f"{self.a if self.latency.value > 1 else self.b} faster"


@dataclass
class Report:
    results: ResultSet
    models: pd.DataFrame
    scores: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    reducers: pd.DataFrame | None = None
    score_pairs: list[ScorePair] = field(default_factory=list)
    latency_pairs: list[LatencyPair] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    pareto: Pareto | None = None
    trend: Trend | None = None
    itl: pd.DataFrame | None = None  # gaps between chunks, when chunk times were kept
    embeddings: pd.DataFrame | None = None  # models with task = "embed"


def build_report(results: ResultSet, *, score: str | None = None) -> Report:
    """Every table of the report, computed once (Markdown and HTML render from this).

    `score` is the one the Pareto chart and the trend follow (default: the first).
    """
    frame, models = results.frame, results.models
    if score is not None and score not in results.score_names:
        known = ", ".join(results.score_names) or "none"
        raise UsageError(f"--pareto-score {score}: no such score in the results (scores: {known})")
    chosen = score or next(iter(results.score_names), None)
    table = model_table(frame, models)
    report = Report(
        results=results,
        models=table,
        itl=itl_distribution(frame, models),
        embeddings=embedding_summary(frame, models),
    )
    prompt_scores = {s: rs.prompt_scores(frame, s, results.spec(s)) for s in results.score_names}
    for score, per_prompt in prompt_scores.items():
        report.scores[score] = {
            m: mean_ci(per_prompt.xs(m, level=0).to_numpy(np.float64))
            if m in per_prompt.index.get_level_values(0)
            else mean_ci([])
            for m in models
        }
    if results.repeats > 1 and results.score_names:
        report.reducers = reducer_table(results)
    latency = rs.per_prompt(frame, rs.LATENCY, "median")
    ttft = rs.per_prompt(frame, rs.TTFT, "median")
    report.headline = headline(table, prompt_scores, latency)
    if chosen is not None:
        report.pareto = pareto(table, report.scores, chosen)
    report.trend = trend(results, table, report.scores, chosen)
    for a, b in model_pairs(results):
        for score, per_prompt in prompt_scores.items():
            xa, xb = rs.paired(per_prompt, a, b)
            mean_a = float(xa.mean()) if len(xa) else math.nan
            mean_b = float(xb.mean()) if len(xb) else math.nan
            report.score_pairs.append(ScorePair(score, a, b, mean_a, mean_b, paired_diff(xa, xb)))
        report.latency_pairs.append(
            LatencyPair(
                a,
                b,
                quantile_ratio(*rs.paired(latency, a, b)),
                quantile_ratio(*rs.paired(ttft, a, b)),
            )
        )
    return report


def model_pairs(results: ResultSet) -> list[tuple[str, str]]:
    """Every pair of models of one run; across runs, each model against its namesake in the
    first run holding it (a week of CI runs compares like with like, not every pair)."""
    by_name: dict[str, list[str]] = {}
    for label in results.models:
        by_name.setdefault(results.model_runs.get(label, (0, label))[1], []).append(label)
    shared = [labels for labels in by_name.values() if len(labels) > 1]
    if len(results.runs) > 1 and shared:
        return [(labels[0], other) for labels in shared for other in labels[1:]]
    return list(itertools.combinations(results.models, 2))


def model_table(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """The end-of-run summary (summary.py) widened: p99s, error types, tokens and cost."""
    extras = []
    for model, group in frame.groupby(rs.MODEL, sort=False):
        ok = group[group[rs.STATUS] == rs.OK]
        kinds = group[rs.ERROR_TYPE].dropna().value_counts()
        prompts = int(group[rs.PROMPT_ID].nunique())
        row = {
            "model": model,
            "ok_pct": 100.0 * len(ok) / len(group),
            "error_types": ", ".join(f"{k} {v}" for k, v in kinds.items()) or "-",
            "ttft_p99_s": ok[rs.TTFT].quantile(0.99),
            "latency_p99_s": ok[rs.LATENCY].quantile(0.99),
            "prompts": prompts,
            "prompt_tokens": group[rs.PROMPT_TOKENS].sum(),
            "completion_tokens": group[rs.COMPLETION_TOKENS].sum(),
        }
        if rs.COST in group:
            cost = cost_total(group)
            row.update(cost, cost_per_1k=1000 * cost[rs.COST] / prompts)
        extras.append(row)
    return summarize(frame, models).merge(pd.DataFrame(extras), on="model", how="left")


def reducer_table(results: ResultSet) -> pd.DataFrame:
    """With repeats: per model and score, the mean, majority and pass@k over prompts."""
    rows = []
    for score in results.score_names:
        threshold = results.spec(score).pass_threshold
        column = SCORE_PREFIX + score
        scored = results.frame.dropna(subset=[column])
        for model, group in scored.groupby(rs.MODEL, sort=False):
            passes = (group[column] >= threshold).groupby(group[rs.PROMPT_ID])
            n, c = passes.size().to_numpy(), passes.sum().to_numpy()
            k = int(n.min())
            rows.append(
                {
                    "score": score,
                    "model": model,
                    "samples": k,
                    "mean": group.groupby(rs.PROMPT_ID)[column].mean().mean(),
                    "majority": float((c * 2 > n).mean()),
                    "pass@1": _mean_pass_at(n, c, 1),
                    f"pass@{k}": _mean_pass_at(n, c, k),
                }
            )
    return pd.DataFrame(rows)


def _mean_pass_at(n: Any, c: Any, k: int) -> float:
    return float(np.mean([pass_at_k(int(t), int(p), k) for t, p in zip(n, c, strict=True)]))


# Markdown rendering.


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; the first column left-aligned, the rest right."""
    cells = [[_cell(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(markdown_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, np.integer | int):
        return f"{int(value):,}"
    return markdown_cell(str(value))


def seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}s"


def estimate(est: Estimate, *, signed: bool = False, digits: int = 3) -> str:
    if est.n == 0 or math.isnan(est.value):
        return "-"
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    if math.isnan(est.low):
        return f.format(est.value)
    return f"{f.format(est.value)} [{f.format(est.low)}, {f.format(est.high)}]"


def ratio(est: Estimate) -> str:
    if est.n == 0 or math.isnan(est.value):
        return "-"
    return f"×{est.value:.2f} [{est.low:.2f}, {est.high:.2f}]"


@dataclass(frozen=True)
class Table:
    """One titled table of the report, cells already formatted (Markdown and HTML share it)."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[Any]]
    note: str = ""


def tables(report: Report) -> list[Table]:
    """The report's tables, in reading order."""
    out = [_models_table(report), _volume_table(report)]
    if report.scores:
        out.append(_scores_table(report))
    if report.pareto is not None:
        out.append(_pareto_table(report.pareto))
    if report.trend is not None:
        out.append(_trend_table(report.trend))
    if report.reducers is not None and not report.reducers.empty:
        t = report.reducers
        out.append(
            Table("reducers", "Repeats: per-prompt reducers", list(t.columns), t.values.tolist())
        )
    if report.score_pairs:
        out.append(_score_pairs_table(report))
    if report.latency_pairs:
        out.append(_latency_pairs_table(report))
    if report.itl is not None:
        out.append(Table("itl", *itl_section(report.itl)))
    if report.embeddings is not None:
        out.append(Table("embeddings", *embedding_section(report.embeddings)))
    return out


def render_markdown(report: Report) -> str:
    sources = ", ".join(f"`{shown(p)}`" for p in report.results.sources)
    parts = [f"# llamabatch report\n\nResults: {sources} — {len(report.results.frame):,} rows"]
    parts += [f"> **{w}**" for w in report.results.warnings]
    if report.headline:
        parts.append("\n".join(f"- {line}" for line in report.headline))
    for table in tables(report):
        text = f"## {table.title}\n\n" + markdown_table(table.headers, table.rows)
        parts.append(text + (f"\n\n{table.note}" if table.note else ""))
    return "\n\n".join(parts) + "\n"


def _models_table(report: Report) -> Table:
    headers = ["model", "rows", "ok %", "errors", "TTFT p50", "TTFT p90", "TTFT p99"]
    headers += ["latency p50", "latency p90", "latency p99"]
    counts = [c for c in ("cached", "batch") if c in report.models]  # rows this run did not time
    headers[4:4] = [{"cached": "cached", "batch": "via batch"}[c] for c in counts]
    rows = []
    for r in report.models.to_dict("records"):
        row = [r["model"], int(r["rows"]), f"{r['ok_pct']:.1f}", r["error_types"]]
        row += [int(r[c]) for c in counts]
        row += [seconds(r[c]) for c in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s")]
        row += [seconds(r[c]) for c in ("latency_p50_s", "latency_p90_s", "latency_p99_s")]
        rows.append(row)
    note = (
        "Cached rows (answered from the response cache) are left out of TTFT and latency; "
        "rows answered through a Batch API have no timings (not measured)."
        if counts
        else ""
    )
    return Table("models", "Models", headers, rows, note)


def _volume_table(report: Report) -> Table:
    has_cost = "cost_usd" in report.models
    unpriced = has_cost and bool(report.models[UNPRICED].fillna(0).any())
    headers = ["model", "prompts", "decode tok/s p50", "output tok/s", "prompt tok"]
    headers += ["completion tok"] + (["cost $", "$ per 1,000 prompts"] if has_cost else [])
    headers += ["rows w/o cost"] if unpriced else []
    rows = []
    for r in report.models.to_dict("records"):
        row = [r["model"], int(r["prompts"]), _one(r["decode_tok_s_p50"]), _one(r["output_tok_s"])]
        row += [int(r["prompt_tokens"]), int(r["completion_tokens"])]
        if has_cost:
            # No cost at all is unknown ("-"), not a lower bound.
            missing = 0 if math.isnan(r["cost_usd"]) else r[UNPRICED]
            row += [
                at_least(_money(r["cost_usd"]), missing),
                at_least(_money(r["cost_per_1k"]), missing),
            ]
        if unpriced:
            row.append(int(r[UNPRICED]) or None)
        rows.append(row)
    note = (
        "≥: a lower bound — ok rows without a cost (a token count the server did not send) "
        "are not counted in it."
        if unpriced
        else ""
    )
    return Table("volume", "Throughput, tokens and cost", headers, rows, note)


def _money(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _pareto_table(p: Pareto) -> Table:
    headers = ["model", f"{p.score} (mean)", "latency p50", "on the latency frontier"]
    if p.has_cost:
        headers += ["$ per 1,000 prompts", "on the cost frontier"]
    rows = []
    for point in p.points:
        row = [point.model, _three(point.score), seconds(point.latency_p50_s)]
        row.append("yes" if point.best_on_latency else "")
        if p.has_cost:
            row += [_money(point.cost_per_1k), "yes" if point.best_on_cost else ""]
        rows.append(row)
    note = (
        "A model is on a frontier when no other model scores at least as high for less "
        "(latency, cost) — the models worth choosing between."
    )
    return Table("pareto", f"Pareto: {p.score} against latency and cost", headers, rows, note)


def _trend_table(t: Trend) -> Table:
    models = t.models
    headers = ["run", "started"]
    for m in models:
        headers += ([f"{m} {t.score}"] if t.score else []) + [f"{m} latency p50"]
    cells = {(p.run, p.model): p for p in t.points}
    rows = []
    for i, run in enumerate(t.runs):
        row: list[Any] = [run.label + (" (baseline)" if i == t.baseline else "")]
        row.append(run.started_at[:16].replace("T", " "))
        for m in models:
            point = cells.get((i, m))
            if t.score:
                row.append(_three(point.score) if point else "-")
            row.append(seconds(point.latency_p50_s) if point else "-")
        rows.append(row)
    note = "Successive runs of one config, oldest first."
    return Table("trend", f"Trend over {len(t.runs)} runs", headers, rows, note)


def _three(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _one(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _scores_table(report: Report) -> Table:
    names = list(report.scores)
    rows = []
    for model in report.results.models:
        rows.append([model] + [estimate(report.scores[s][model]) for s in names])
    headers = ["model"] + [f"{s} ({report.results.spec(s).reduce})" for s in names]
    return Table("scores", "Scores (mean per prompt, 95% CI)", headers, rows)


def _score_pairs_table(report: Report) -> Table:
    rows = [
        [
            p.score,
            f"{p.b} vs {p.a}",
            p.result.diff.n,
            _two(p.mean_a, p.mean_b),
            estimate(p.result.diff, signed=True),
            _wtl(p.result),
            _p(p.result.p_value),
            p.verdict,
        ]
        for p in report.score_pairs
    ]
    headers = ["score", "B vs A", "prompts", "mean A → B", "B − A (95% CI)", "W/T/L", "p"]
    note = (
        "W/T/L: prompts where B scored higher / the same / lower than A. "
        f"p: paired sign-flip test; differences with p ≥ {ALPHA} are not significant."
    )
    return Table("score_pairs", "Pairwise scores (same prompts)", [*headers, "verdict"], rows, note)


def _latency_pairs_table(report: Report) -> Table:
    rows = [
        [f"{p.b} vs {p.a}", p.latency.n, ratio(p.latency), ratio(p.ttft), p.verdict]
        for p in report.latency_pairs
    ]
    headers = ["B vs A", "prompts", "latency p50 B/A (95% CI)", "TTFT p50 B/A (95% CI)", "verdict"]
    note = (
        "Ratio of the medians of per-prompt median latency (TTFT), with a paired bootstrap CI; "
        "a ratio whose interval includes 1 is not significant."
    )
    return Table("latency_pairs", "Pairwise latency (same prompts)", headers, rows, note)


def _two(a: float, b: float) -> str:
    return "-" if math.isnan(a) else f"{a:.3f} → {b:.3f}"


def _wtl(result: PairedDiff) -> str:
    return f"{result.wins}/{result.ties}/{result.losses}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"
