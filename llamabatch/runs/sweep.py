"""`llamabatch sweep`: run one config at rising load and find the highest that meets the SLOs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from llamabatch.config import RunConfig
from llamabatch.config.schema import MAX_CONCURRENCY
from llamabatch.config.settings import MAX_NUMBER
from llamabatch.errors import UsageError
from llamabatch.report.summary import meets_slo
from llamabatch.runs.runner import arun

_SECONDS = ("ttft_p50_s", "ttft_p99_s", "latency_p50_s", "latency_p99_s")


@dataclass(frozen=True)
class Level:
    """One step of a sweep: an open-loop rate or a closed-loop concurrency."""

    kind: str  # "rate" or "concurrency"
    value: float

    @property
    def label(self) -> str:
        return f"{self.value:g} req/s" if self.kind == "rate" else f"concurrency {self.value:g}"

    def apply(self, config: RunConfig, root: Path) -> RunConfig:
        engine = config.engine
        if self.kind == "rate":
            engine = dataclasses.replace(engine, request_rate=self.value)
        else:
            engine = dataclasses.replace(engine, concurrency=int(self.value), request_rate=None)
        output = root / f"{self.kind}-{self.value:g}"
        return dataclasses.replace(config, engine=engine, output=output)


def parse_levels(rates: str | None, concurrency: str | None) -> list[Level]:
    if (rates is None) == (concurrency is None):
        raise UsageError("sweep needs exactly one of --rates R1,R2,... or --concurrency C1,C2,...")
    kind, text = ("rate", rates) if rates is not None else ("concurrency", concurrency)
    try:
        values = sorted({float(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise UsageError(
            f"--{kind.replace('rate', 'rates')}: expected numbers, got {text!r}"
        ) from None
    if not values or not all(0 < v < MAX_NUMBER for v in values):
        raise UsageError(f"sweep levels must be positive finite numbers, got {text!r}")
    if kind == "concurrency" and max(values) > MAX_CONCURRENCY:
        raise UsageError(f"--concurrency: at most {MAX_CONCURRENCY:,} requests in flight")
    return [Level(kind, v) for v in values]


async def sweep(config: RunConfig, levels: Sequence[Level], root: Path) -> pd.DataFrame:
    """Run every level into its own directory under `root`; one summary row per (level, model)."""
    rows: list[dict[str, Any]] = []
    for level in levels:
        result = await arun(level.apply(config, root))
        frame = result.dataframe()
        for model in result.models:
            rows.append(
                {
                    "level": level.label,
                    "value": level.value,
                    "model": model,
                    **_measure(frame[frame["model"] == model], config.slo),
                }
            )
    return pd.DataFrame(rows)


def _measure(group: pd.DataFrame, slo: Mapping[str, float]) -> dict[str, Any]:
    ok = group[group["status"] == "ok"]
    sent = group["started_at"]
    span = (sent.max() - sent.min()).total_seconds()
    wall = (group["finished_at"].max() - sent.min()).total_seconds()
    measured = {
        "rows": float(len(group)),
        "sent_req_s": (len(group) - 1) / span if span > 0 else float("nan"),
        "ttft_p50_s": ok["ttft_s"].quantile(0.5),
        "ttft_p99_s": ok["ttft_s"].quantile(0.99),
        "latency_p50_s": ok["latency_s"].quantile(0.5),
        "latency_p99_s": ok["latency_s"].quantile(0.99),
    }
    if slo:
        good = int(meets_slo(group, slo).sum())
        measured["slo_pct"] = 100.0 * good / len(group)
        measured["goodput_req_s"] = good / wall if wall > 0 else float("nan")
    return measured


def best_levels(table: pd.DataFrame, slo: dict[str, float]) -> dict[str, str | None]:
    """Per model, the highest level whose rows met the SLOs at least `attainment` of the time."""
    if not slo or table.empty:
        return {}
    need = 100.0 * slo.get("attainment", 0.9)
    best: dict[str, str | None] = {}
    for model, group in table.groupby("model", sort=False):
        passing = group[group["slo_pct"] >= need].sort_values("value")
        best[str(model)] = None if passing.empty else str(passing.iloc[-1]["level"])
    return best


def render(table: pd.DataFrame, slo: dict[str, float]) -> str:
    """The sweep as Markdown: one line per (level, model), then the verdict."""
    headers = ["load", "model", "sent req/s", "TTFT p50", "TTFT p99", "latency p50", "latency p99"]
    if slo:
        headers += ["SLO met %", "goodput req/s"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in table.to_dict("records"):
        cells = [r["level"], r["model"], f"{r['sent_req_s']:.2f}"]
        cells += [
            f"{r[c]:.3f}s" for c in ("ttft_p50_s", "ttft_p99_s", "latency_p50_s", "latency_p99_s")
        ]
        if slo:
            cells += [f"{r['slo_pct']:.1f}", f"{r['goodput_req_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if not slo:
        return (
            text
            + "\nNo [slo] in the config: add thresholds to find the highest load that meets them.\n"
        )
    objectives = ", ".join(f"{k} <= {v:g}" for k, v in slo.items() if k != "attainment")
    text += f"\nSLO: {objectives}, met by at least {slo.get('attainment', 0.9):.0%} of requests.\n"
    for model, level in best_levels(table, slo).items():
        text += f"- {model}: {level or 'no level tried meets the SLOs'}\n"
    return text
