"""Report charts drawn by matplotlib and returned as inline SVG markup.

Figures are built with `matplotlib.figure.Figure` (no pyplot state, no GUI
backend). Text stays text (`svg.fonttype = none`), element ids get a
per-chart salt so several charts can share one HTML page, and the metadata
is dropped so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from llamabatch.report import resultset as rs
from llamabatch.report.across import Pareto, Trend
from llamabatch.report.stats import Estimate
from llamabatch.report.summary import UNPRICED, at_least

WIDTH_IN: Final = 7.5
PALETTE: Final = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")
_SVG_START: Final = re.compile(r"<svg\b")


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def to_svg(fig: Figure, salt: str) -> str:
    """The figure as an `<svg>` element (no XML prolog), ids unique to `salt`."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(
            buffer,
            format="svg",
            bbox_inches="tight",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    text = buffer.getvalue()
    match = _SVG_START.search(text)
    return text[match.start() :] if match else text


def _figure(height_in: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(WIDTH_IN, height_in))
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="both", alpha=0.25)
    return fig, ax


def cdf_chart(frame: pd.DataFrame, column: str, models: Sequence[str], title: str) -> str | None:
    """Empirical CDF of a per-request time (ok rows) per model; None when there is none."""
    fig, ax = _figure(3.4)
    drawn = False
    for i, model in enumerate(models):
        ok = frame[(frame[rs.MODEL] == model) & (frame[rs.STATUS] == rs.OK)]
        values = np.sort(ok[column].dropna().to_numpy(np.float64))
        if len(values) == 0:
            continue
        share = np.arange(1, len(values) + 1) / len(values)
        ax.step(values, share, where="post", label=model, color=_colour(i), linewidth=1.8)
        drawn = True
    if not drawn:
        return None
    for q in (0.5, 0.9):
        ax.axhline(q, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlabel(f"{title} (s)")
    ax.set_ylabel("share of requests ≤ x")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}: cumulative distribution")
    ax.legend(frameon=False, loc="lower right")
    return to_svg(fig, f"cdf-{column}")


def throughput_chart(table: pd.DataFrame) -> str | None:
    """Aggregate output tokens/s over the run's wall time, and decode tokens/s p50, per model."""
    if not (table["output_tok_s"].fillna(0) > 0).any():
        return None  # nothing succeeded (or no tokens): empty bars would say nothing
    fig = Figure(figsize=(WIDTH_IN, 3.2))
    axes = fig.subplots(1, 2)
    models = table["model"].tolist()
    colours = [_colour(i) for i in range(len(models))]
    for ax, column, title in (
        (axes[0], "output_tok_s", "output tokens/s (whole run)"),
        (axes[1], "decode_tok_s_p50", "decode tokens/s (p50 per request)"),
    ):
        values = table[column].fillna(0).to_numpy(np.float64)
        ax.barh(models, values, color=colours)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x", alpha=0.25)
    fig.tight_layout()
    return to_svg(fig, "throughput")


def score_chart(scores: Mapping[str, Mapping[str, Estimate]], models: Sequence[str]) -> str | None:
    """Mean score per model and scorer, with 95% interval whiskers."""
    names = list(scores)
    if all(math.isnan(e.value) for per in scores.values() for e in per.values()):
        return None
    fig, ax = _figure(3.4)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(names))
    for i, model in enumerate(models):
        ests = [scores[name][model] for name in names]
        means = np.array([0.0 if math.isnan(e.value) else e.value for e in ests])
        low = np.array([0.0 if math.isnan(e.low) else e.value - e.low for e in ests])
        high = np.array([0.0 if math.isnan(e.high) else e.high - e.value for e in ests])
        ax.bar(
            x + (i - (len(models) - 1) / 2) * width,
            means,
            width,
            yerr=np.vstack([low, high]),
            capsize=3,
            label=model,
            color=_colour(i),
            error_kw={"elinewidth": 1, "ecolor": "#333333"},
        )
    ax.set_xticks(x, names)
    ax.set_ylabel("mean score (95% CI)")
    ax.set_title("Scores")
    ax.legend(
        frameon=False, ncols=min(4, len(models)), loc="upper center", bbox_to_anchor=(0.5, -0.12)
    )
    return to_svg(fig, "scores")


def error_chart(frame: pd.DataFrame, models: Sequence[str]) -> str | None:
    """Failed rows per model, stacked by error type; None when nothing failed."""
    errors = frame[frame[rs.STATUS] != rs.OK]
    if errors.empty:
        return None
    counts = errors.groupby([rs.MODEL, rs.ERROR_TYPE]).size().unstack(fill_value=0)
    counts = counts.reindex(list(models), fill_value=0)
    fig, ax = _figure(0.6 + 0.45 * len(models))
    left = np.zeros(len(models))
    for i, kind in enumerate(counts.columns):
        values = counts[kind].to_numpy(np.float64)
        ax.barh(models, values, left=left, label=str(kind), color=_colour(i + 3))
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("failed rows")
    ax.set_title("Errors by type")
    ax.legend(frameon=False, loc="lower right")
    return to_svg(fig, "errors")


def cost_chart(table: pd.DataFrame) -> str | None:
    """Cost per 1,000 prompts per model; None without prices."""
    if "cost_per_1k" not in table or table["cost_per_1k"].isna().all():
        return None
    models = table["model"].tolist()
    if UNPRICED in table:  # a model with ok rows lacking a cost: its bar is a lower bound
        bounds = table[UNPRICED].fillna(0).where(table["cost_per_1k"].notna(), 0)
        models = [at_least(m, n) for m, n in zip(models, bounds, strict=True)]
    fig, ax = _figure(0.6 + 0.45 * len(models))
    values = table["cost_per_1k"].fillna(0).to_numpy(np.float64)
    ax.barh(models, values, color=[_colour(i) for i in range(len(models))])
    ax.invert_yaxis()
    ax.set_xlabel("USD per 1,000 prompts")
    ax.set_title("Cost")
    return to_svg(fig, "cost")


def pareto_chart(p: Pareto) -> str:
    """The score against latency p50 (and cost per 1,000 prompts, with prices), the models
    on the frontier filled, labelled and joined."""
    panels = [("latency_p50_s", "latency p50 (s)", "best_on_latency")]
    if p.has_cost:
        panels.append(("cost_per_1k", "USD per 1,000 prompts", "best_on_cost"))
    fig = Figure(figsize=(WIDTH_IN, 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (attr, label, best) in zip(axes, panels, strict=True):
        points = [q for q in p.points if not math.isnan(getattr(q, attr) + q.score)]
        for i, q in enumerate(p.points):
            if q not in points:
                continue
            on = getattr(q, best)
            ax.scatter(
                getattr(q, attr),
                q.score,
                s=60,
                color=_colour(i) if on else "white",
                edgecolors=_colour(i),
                linewidths=1.5,
                zorder=3,
            )
            ax.annotate(
                q.model,
                (getattr(q, attr), q.score),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
                color="#1f2328" if on else "#777777",
            )
        frontier = sorted((getattr(q, attr), q.score) for q in points if getattr(q, best))
        if len(frontier) > 1:
            xs, ys = zip(*frontier, strict=True)
            ax.step(xs, ys, where="post", color="#999999", linewidth=1, linestyle="--")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{p.score} (mean)")
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25)
    fig.suptitle(f"Pareto: {p.score} (filled: on the frontier)", fontsize=11)
    fig.tight_layout()
    return to_svg(fig, "pareto")


def trend_chart(t: Trend) -> str:
    """Score and latency p50 per model over successive runs, the baseline run marked."""
    panels = ([("score", f"{t.score} (mean)")] if t.score else []) + [
        ("latency_p50_s", "latency p50 (s)")
    ]
    fig = Figure(figsize=(WIDTH_IN, 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (attr, label) in zip(axes, panels, strict=True):
        for i, model in enumerate(t.models):
            mine = [q for q in t.points if q.model == model]
            ax.plot(
                [q.run for q in mine],
                [getattr(q, attr) for q in mine],
                marker="o",
                label=model,
                color=_colour(i),
            )
        ax.axvline(t.baseline, color="#999999", linestyle=":", linewidth=1)
        ax.annotate(
            "baseline",
            (t.baseline, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10),
            textcoords="offset points",
            fontsize=8,
            color="#59636e",
        )
        ax.set_xticks(
            range(len(t.runs)), [r.label for r in t.runs], rotation=30, ha="right", fontsize=8
        )
        ax.set_ylabel(label)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"Trend over {len(t.runs)} runs", fontsize=11)
    fig.tight_layout()
    return to_svg(fig, "trend")
