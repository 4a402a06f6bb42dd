"""Load results directories for reports and compare, and reduce scores per prompt.

Column names come from `results/schema.py` (checked at import, so a schema change
breaks loudly here rather than silently in a report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from llamabatch.config import ScorerSpec
from llamabatch.config.scorers import DEFAULT_PASS_THRESHOLD, specs_from_snapshot
from llamabatch.errors import UsageError
from llamabatch.report.stats import reduce_samples
from llamabatch.report.summary import without_cached_timings
from llamabatch.results import COLUMNS, read_manifest
from llamabatch.results.manifest import client_warning
from llamabatch.results.parts import Parts
from llamabatch.results.remote import shown, shown_name
from llamabatch.results.schema import COST_COLUMN, SCORE_PREFIX


def _col(name: str) -> str:
    if name not in COLUMNS:
        raise AssertionError(f"results schema has no column {name!r}")
    return name


MODEL, PROMPT_ID, SAMPLE, STATUS = map(_col, ("model", "prompt_id", "sample", "status"))
ERROR_TYPE, EXPECTED, OUTPUT = map(_col, ("error_type", "expected", "output_text"))
TTFT, LATENCY, DECODE_TPS = map(_col, ("ttft_s", "latency_s", "decode_tps"))
PROMPT_TOKENS, COMPLETION_TOKENS = map(_col, ("prompt_tokens", "completion_tokens"))
STARTED, FINISHED, RUN_ID = map(_col, ("started_at", "finished_at", "run_id"))
CHUNK_TIMES, CHUNK_TOKENS, TURN = map(_col, ("chunk_times_s", "chunk_tokens", "turn"))
COST = COST_COLUMN
OK = "ok"
DIMENSIONS = _col("dimensions")
# Vectors are left on disk: a million of them would not fit in a report's memory.
_SKIP_COLUMNS = frozenset({_col("request_params"), _col("embedding")})


@dataclass(frozen=True)
class RunInfo:
    """One results directory of a result set, as its manifest describes it."""

    path: Path
    label: str  # the directory's name: the prefix of its models' labels when they clash
    name: str  # the config's run name
    started_at: str  # ISO time from the manifest ("" when there is none)


@dataclass(frozen=True)
class ResultSet:
    """Rows of one or more results directories; `model` holds each model's label."""

    frame: pd.DataFrame
    sources: tuple[Path, ...]
    specs: dict[str, ScorerSpec]
    order: tuple[str, ...] = ()  # model labels in config order, where manifests tell it
    warnings: tuple[str, ...] = ()  # e.g. a run whose client was the bottleneck
    runs: tuple[RunInfo, ...] = ()  # one per source, in the order given
    model_runs: dict[str, tuple[int, str]] = field(default_factory=dict)  # label: (run, name)

    @property
    def models(self) -> list[str]:
        present = set(self.frame[MODEL].unique())  # not row by row: a run may have millions
        ordered = [m for m in self.order if m in present]
        return ordered + sorted(present - set(ordered))

    @property
    def score_names(self) -> list[str]:
        return [c[len(SCORE_PREFIX) :] for c in self.frame.columns if c.startswith(SCORE_PREFIX)]

    def spec(self, score: str) -> ScorerSpec:
        return self.specs.get(score) or ScorerSpec(name=score, type="unknown")

    @property
    def repeats(self) -> int:
        return int(self.frame[SAMPLE].max()) + 1 if len(self.frame) else 0


def read_results_dir(path: Path, skip: frozenset[str] = frozenset()) -> pd.DataFrame:
    """Every part of one results directory as one frame (parts may differ in columns).

    `skip` leaves columns out (the viewer's run page needs no output texts).
    """
    if not path.is_dir():
        raise UsageError(f"{path}: not a results directory")
    parts = Parts(path)  # here, or at the URI it stages for (s3://...)
    if not parts.paths:
        raise UsageError(f"{shown(path)}: holds no results (no part-*.parquet files)")
    tables = []
    for part in parts.paths:
        schema = parts.schema(part)
        columns = [n for n in schema.names if n not in _SKIP_COLUMNS and n not in skip]
        tables.append(parts.read(part, columns=columns))
    frame: pd.DataFrame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return without_cached_timings(frame)


def load_results(paths: Sequence[Path], skip: frozenset[str] = frozenset()) -> ResultSet:
    """Load directories; a model name found in several of them is labelled `<dir>/<model>`."""
    frames = [read_results_dir(Path(p), skip) for p in paths]
    seen: dict[str, int] = {}
    for frame in frames:
        for model in frame[MODEL].unique():
            seen[model] = seen.get(model, 0) + 1
    specs: dict[str, ScorerSpec] = {}
    order: list[str] = []
    warnings: list[str] = []
    runs: list[RunInfo] = []
    model_runs: dict[str, tuple[int, str]] = {}
    for index, (path, frame) in enumerate(zip(paths, frames, strict=True)):
        prefix = shown_name(Path(path)) + "/"
        for model in frame[MODEL].unique():
            model_runs[prefix + model if seen[model] > 1 else model] = (index, model)
        clashing = frame[MODEL].map(lambda m: seen[m] > 1)
        frame.loc[clashing, MODEL] = prefix + frame.loc[clashing, MODEL]
        manifest = read_manifest(Path(path)) or {}
        runs.append(
            RunInfo(
                Path(path),
                shown_name(Path(path)),
                str(manifest.get("name") or ""),
                str(manifest.get("started_at") or ""),
            )
        )
        if (warning := client_warning(manifest.get("client"))) is not None:
            warnings.append(f"{shown(Path(path))}: {warning}")
        snapshot = manifest.get("config") or {}
        for spec in specs_from_snapshot(snapshot):
            specs.setdefault(spec.name, spec)
        for model in snapshot.get("models") or []:
            name = model.get("name", "")
            order.append(prefix + name if seen.get(name, 0) > 1 else name)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    sources = tuple(Path(p) for p in paths)
    return ResultSet(
        frame=frame,
        sources=sources,
        specs=specs,
        order=tuple(order),
        warnings=tuple(warnings),
        runs=tuple(runs),
        model_runs=model_runs,
    )


def prompt_scores(frame: pd.DataFrame, score: str, spec: ScorerSpec) -> pd.Series:
    """One score per (model, prompt_id): the scorer's reducer over that prompt's samples."""
    column = SCORE_PREFIX + score
    scored = frame[[MODEL, PROMPT_ID, column]].dropna(subset=[column])
    threshold = spec.pass_threshold if spec.type != "unknown" else DEFAULT_PASS_THRESHOLD
    if scored.empty:
        return pd.Series(dtype=np.float64)
    # A conversation's scored turns are reduced like samples.
    one_row_each = TURN not in frame or frame[TURN].isna().all()
    if int(frame[SAMPLE].max()) == 0 and spec.reduce == "mean" and one_row_each:
        return scored.set_index([MODEL, PROMPT_ID])[column].astype(np.float64)

    def reduce(values: pd.Series) -> float:
        return reduce_samples(values.to_numpy(np.float64), spec.reduce, threshold)

    return scored.groupby([MODEL, PROMPT_ID], sort=False)[column].agg(reduce)


def per_prompt(frame: pd.DataFrame, column: str, how: str = "mean") -> pd.Series:
    """A metric per (model, prompt_id) over ok samples (latency, TTFT, ...)."""
    ok = frame[frame[STATUS] == OK]
    grouped = ok.groupby([MODEL, PROMPT_ID], sort=False)[column]
    result: pd.Series = grouped.agg(how)
    return result


def paired(series: pd.Series, a: str, b: str) -> tuple[Any, Any]:
    """Values of models a and b on the prompts both have, aligned by prompt."""
    if not isinstance(series.index, pd.MultiIndex):  # nothing to pair (no rows)
        return np.empty(0), np.empty(0)
    models = series.index.get_level_values(0)
    left = series[models == a].droplevel(0)
    right = series[models == b].droplevel(0)
    # One join of the two indexes (looking each prompt up took seconds over 300,000).
    left, right = left.align(right, join="inner")
    return left.to_numpy(np.float64), right.to_numpy(np.float64)
