"""`llamabatch score`: recompute the score columns of a results directory from stored outputs.

Scorers and prices come from `--config` when given (to fix a scorer after an
expensive run), else from the config snapshot in the directory's manifest.
No model is called, except by judge scorers whose stored verdict is missing,
failed, or was made for a different judge request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamabatch.config import EngineConfig, ModelConfig, RunConfig
from llamabatch.config.endpoints import BatchApi
from llamabatch.config.load import load_config
from llamabatch.config.schema import REDACTED
from llamabatch.config.scorers import specs_from_snapshot
from llamabatch.errors import UsageError
from llamabatch.results import read_manifest, write_manifest
from llamabatch.results.dirlock import DirectoryLock
from llamabatch.results.parts import Parts
from llamabatch.results.remote import remote_of, shown
from llamabatch.runs.judge import Judge, rescore_judged
from llamabatch.scoring import RescoreReport
from llamabatch.scoring.apply import Scoring

_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
_ENGINE_FIELDS = {f.name for f in dataclasses.fields(EngineConfig)}


def config_from_snapshot(snapshot: Mapping[str, Any], output: Path) -> RunConfig:
    """The parts of a manifest's config snapshot that scoring needs, as a RunConfig."""
    try:
        return RunConfig(
            name=str(snapshot.get("name", output.name)),
            input=Path(snapshot["input"]),
            output=output,
            models=tuple(_model(m) for m in snapshot.get("models") or []),
            engine=EngineConfig(
                **{k: v for k, v in (snapshot.get("engine") or {}).items() if k in _ENGINE_FIELDS}
            ),
            defaults=snapshot.get("defaults") or {},
            scorers=specs_from_snapshot(snapshot),
            judge_models=tuple(_model(m) for m in snapshot.get("judge_models") or []),
        )
    except (KeyError, TypeError) as exc:
        raise UsageError(
            f"{output}/_manifest.json: config snapshot is unreadable ({exc}); pass --config"
        ) from None


def _model(data: Mapping[str, Any]) -> ModelConfig:
    fields = {k: v for k, v in data.items() if k in _MODEL_FIELDS}
    if fields.get("api_key") == REDACTED:
        fields.pop("api_key")  # an inline key is never stored; use api_key_env or --config
    if isinstance(fields.get("batch"), Mapping):
        fields["batch"] = BatchApi(**fields["batch"])
    return ModelConfig(**fields)


async def score_results(output: Path, config_path: Path | None = None) -> RescoreReport:
    """Re-score every part of `output`; the manifest records the scorers now in force."""
    if not output.is_dir() or not Parts(output).paths:
        raise UsageError(f"{shown(output)}: holds no results (no part-*.parquet files)")
    manifest = read_manifest(output) or {}
    if config_path is not None:
        config = dataclasses.replace(load_config(config_path), output=output)
    elif manifest.get("config"):
        config = config_from_snapshot(manifest["config"], output)
    else:
        raise UsageError(f"{output}: no _manifest.json to take scorers from; pass --config")
    scoring = Scoring.from_config(config)
    if not scoring.active:
        raise UsageError(f"{config_path or output}: no [[scorers]] or prices configured")
    judge = Judge(scoring.model_scorers, config) if scoring.model_scorers else None
    if judge is not None and remote_of(output) is not None:  # as `run` refuses them
        raise UsageError(f"{shown(output)}: model-judged scorers need a local results directory")
    with DirectoryLock(output, "score"):  # no run writes here meanwhile, nor another score
        manifest = read_manifest(output) or {}  # as it is now, under the lock
        report = await rescore_judged(output, scoring, judge)
        _record_scorers(output, manifest, config)
    return report


def _record_scorers(output: Path, manifest: dict[str, Any], config: RunConfig) -> None:
    """The manifest records the scorers now in force and when they were applied."""
    if manifest:
        snapshot = config.snapshot()
        manifest.setdefault("config", {})
        for key in ("scorers", "judge_models"):
            manifest["config"][key] = snapshot[key]
        manifest["rescored_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        write_manifest(output, manifest)
