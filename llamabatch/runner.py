"""`run` / `arun`: validate, open the output, start what is needed, drive the engine."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from llamabatch.config import RunConfig, apply_overrides, load_config
from llamabatch.engine import Engine, Lane, Observer
from llamabatch.errors import RequestError, UsageError
from llamabatch.judge import Judge
from llamabatch.prompts import Prompt, PromptSet, carried_value
from llamabatch.redact import Redactor
from llamabatch.results import (
    COLUMNS,
    JOURNAL_DIR,
    MANIFEST,
    ResultWriter,
    part_files,
    read_manifest,
    result_schema,
    versions,
    write_manifest,
)
from llamabatch.scoring import Scoring, is_derived, rescore
from llamabatch.sim import SimProfile, SimServer, builtin_profile
from llamabatch.transport import Transport

if TYPE_CHECKING:
    import pandas as pd

FLUSH_INTERVAL_S = 10.0
EXIT_OK, EXIT_ROW_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 3, 2, 130


@dataclass(frozen=True)
class RunResult:
    """What a run did; `dataframe()` loads the whole results directory."""

    run_id: str
    output: Path
    ok: int
    errors: Mapping[str, int]
    already_done: int
    interrupted: bool = False
    models: tuple[str, ...] = ()

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_ROW_ERRORS if self.error_count else EXIT_OK

    def dataframe(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.output)


@dataclass
class _Tally:
    """Counts rows as they finish and forwards events to the caller's observer."""

    forward: Observer | None
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def on_start(self, pending: int) -> None:
        if self.forward is not None:
            self.forward.on_start(pending)

    def on_row(self, row: Mapping[str, Any]) -> None:
        if row["status"] == "ok":
            self.ok += 1
        else:
            self.errors[row["error_type"]] += 1
        if self.forward is not None:
            self.forward.on_row(row)

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None:
        if self.forward is not None:
            self.forward.on_retry(model, error, delay_s)


def run(
    config: RunConfig | str | Path,
    *,
    observer: Observer | None = None,
    resume: bool = True,
    force: bool = False,
    **overrides: Any,
) -> RunResult:
    """Run a config to completion (blocking); overrides: output, limit, models."""
    return anyio.run(
        lambda: arun(config, observer=observer, resume=resume, force=force, **overrides)
    )


async def arun(
    config: RunConfig | str | Path,
    *,
    observer: Observer | None = None,
    resume: bool = True,
    force: bool = False,
    **overrides: Any,
) -> RunResult:
    """Like `run`, for code already inside an event loop."""
    if isinstance(config, RunConfig):
        config = apply_overrides(config, **overrides)
    else:
        config = load_config(config, **overrides)
    prompts = PromptSet(config.input, limit=config.limit)
    report = await anyio.to_thread.run_sync(prompts.scan)
    if not config.skip_invalid:
        report.raise_if_invalid()
    scoring = Scoring.from_config(config)
    judge = Judge(scoring.judges, config) if scoring.judges else None  # checks keys up front
    clashes = sorted(c for c in report.extra_types if c in COLUMNS or is_derived(c))
    if clashes:
        raise UsageError(
            f"{config.input}: column(s) {', '.join(clashes)} clash with result columns; rename them"
        )
    api_keys = {m.name: m.resolve_api_key() for m in config.models}
    _prepare_output(config.output, resume=resume, force=force)

    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    schema = result_schema(report.extra_types, scoring.fields())
    writer = ResultWriter(config.output, schema, run_id)
    done = await anyio.to_thread.run_sync(writer.open)
    manifest = _manifest(config, run_id, report.valid, report.error_count)
    write_manifest(config.output, manifest)

    tally = _Tally(observer)
    per_model = prompts.count() * config.repeats
    tally.on_start(sum(max(0, per_model - done.count(m.name)) for m in config.models))
    interrupted = False
    try:
        async with Transport() as transport, _simulators(config) as config:
            lanes = [Lane.build(m, config, api_keys[m.name]) for m in config.models]
            engine = Engine(
                config=config,
                lanes=lanes,
                transport=transport,
                sink=scoring.sink(writer),
                make_row=_row_factory(report.extra_types),
                redact=Redactor(config.secrets()),
                observer=tally,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(_flush_periodically, writer)
                await engine.run(run_id, prompts, done)
                tg.cancel_scope.cancel()
    except BaseException:
        interrupted = True
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(writer.close)
            manifest.update(
                status="interrupted" if interrupted else "finished",
                finished_at=_now_iso(),
                counts={"ok": tally.ok, "error": dict(tally.errors), "already_done": done.count()},
            )
            write_manifest(config.output, manifest)
    if scoring.active:  # judges run now; parts from earlier runs may predate the scorers
        await rescore(config.output, scoring, only_stale=True, judge=judge)
    return RunResult(
        run_id=run_id,
        output=config.output,
        ok=tally.ok,
        errors=dict(tally.errors),
        already_done=done.count(),
        models=tuple(m.name for m in config.models),
    )


def _prepare_output(output: Path, *, resume: bool, force: bool) -> None:
    has_results = output.is_dir() and (bool(part_files(output)) or (output / JOURNAL_DIR).is_dir())
    if resume or not has_results:
        output.mkdir(parents=True, exist_ok=True)
        return
    if not force:
        raise UsageError(
            f"{output} already holds results; --no-resume would replace them: "
            "add --force, or choose another --output"
        )
    for path in part_files(output):
        path.unlink()
    shutil.rmtree(output / JOURNAL_DIR, ignore_errors=True)
    (output / MANIFEST).unlink(missing_ok=True)


@asynccontextmanager
async def _simulators(config: RunConfig) -> AsyncIterator[RunConfig]:
    """Start one in-process simulator for every `sim` model without a base_url."""
    local = [m for m in config.models if m.provider == "sim" and m.base_url is None]
    if not local:
        yield config
        return
    profiles = {m.model: SimProfile.from_mapping(m.sim, builtin_profile(m.model)) for m in local}
    async with SimServer(profiles=profiles) as sim:
        models = tuple(
            dataclasses.replace(m, base_url=sim.base_url) if m in local else m
            for m in config.models
        )
        yield dataclasses.replace(config, models=models)


async def _flush_periodically(writer: ResultWriter) -> None:
    """Move journalled rows into Parquet parts, off the event loop."""
    last = time.monotonic()
    while True:
        await anyio.sleep(0.25)
        now = time.monotonic()
        if writer.pending >= writer.rows_per_part or (
            writer.pending and now - last >= FLUSH_INTERVAL_S
        ):
            closed = writer.rotate()
            if closed is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(writer.write_part, *closed)
            last = now


def _row_factory(extra_types: Mapping[str, Any]) -> Any:
    blank = dict.fromkeys(COLUMNS)
    extras = list(extra_types.items())

    def make_row(prompt: Prompt) -> dict[str, Any]:
        row = blank.copy()
        row["expected"] = prompt.expected
        for name, arrow_type in extras:
            row[name] = carried_value(prompt.extra.get(name), arrow_type)
        return row

    return make_row


def _manifest(config: RunConfig, run_id: str, valid: int, invalid: int) -> dict[str, Any]:
    previous = read_manifest(config.output)
    history = []
    if previous:
        history = previous.pop("previous_runs", [])
        keep = ("run_id", "status", "started_at", "finished_at", "counts")
        history.append({k: previous.get(k) for k in keep})
    return {
        "run_id": run_id,
        "name": config.name,
        "status": "running",
        "started_at": _now_iso(),
        "finished_at": None,
        "input": {"path": str(config.input), "valid_rows": valid, "invalid_rows": invalid},
        "config": config.snapshot(),
        "versions": versions(),
        "counts": {},
        "previous_runs": history,
    }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
