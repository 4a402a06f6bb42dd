"""`run` / `arun`: validate, open the output, start what is needed, drive the engine."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from llamabatch.config import RunConfig, apply_overrides, load_config
from llamabatch.config.runmodes import check_batch, with_workers
from llamabatch.engine import Observer
from llamabatch.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROW_ERRORS,
    StorageError,
    UsageError,
)
from llamabatch.prompts import Layout, PromptSet
from llamabatch.redact import Redactor, redacted_logs
from llamabatch.results import (
    ResultWriter,
    RowBuilder,
    result_schema,
    write_manifest,
)
from llamabatch.results.cache import ResponseCache
from llamabatch.results.dirlock import DirectoryLock
from llamabatch.runs.drive import ActiveRun, Tally
from llamabatch.runs.judge import Judge, rescore_judged
from llamabatch.runs.output import (
    announce,
    check_output,
    new_manifest,
    now_iso,
    open_output,
    prepare_output,
)
from llamabatch.runs.preflight import preflight
from llamabatch.runs.servers import sim_profiles
from llamabatch.scoring import Scoring

if TYPE_CHECKING:
    import pandas as pd


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
    client: Mapping[str, Any] = field(default_factory=dict)  # loop lag, CPU: see engine/monitor

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_ROW_ERRORS if self.error_count else EXIT_OK

    def dataframe(self) -> pd.DataFrame:
        """The directory's rows: its own part files (a results folder inside is another's)."""
        import pyarrow.dataset as ds

        from llamabatch.results.parts import Parts

        parts = Parts(self.output)  # here, or at the URI it stages for (s3://...)
        dataset = ds.dataset(parts.paths, format="parquet", filesystem=parts.fs)
        frame: pd.DataFrame = dataset.to_table().to_pandas()
        return frame


def run(
    config: RunConfig | str | Path,
    *,
    output: str | Path | None = None,
    limit: int | None = None,
    models: Sequence[str] | None = None,
    observer: Observer | None = None,
    resume: bool = True,
    force: bool = False,
    add_models: bool = False,
    keep_errors: bool = False,
    handle_signals: bool = False,
    check: bool = True,
    batch: bool = False,
    cache: str | Path | bool | None = None,
    cache_refresh: bool = False,
    workers: int | str | None = None,
    ray: bool = False,
    ray_address: str | None = None,
) -> RunResult:
    """Run a config (a file, or a `RunConfig`) to completion; blocking.

    `output`, `limit`, `models`, `batch`, `cache`, `cache_refresh` and `workers` override
    the config as the command line's options do; `ray` runs the work as Ray actors (on
    the cluster at `ray_address` or $RAY_ADDRESS, else a local one). See `arun` for the rest.
    """
    return anyio.run(
        functools.partial(
            arun,
            config,
            output=output,
            limit=limit,
            models=models,
            observer=observer,
            resume=resume,
            force=force,
            add_models=add_models,
            keep_errors=keep_errors,
            handle_signals=handle_signals,
            check=check,
            batch=batch,
            cache=cache,
            cache_refresh=cache_refresh,
            workers=workers,
            ray=ray,
            ray_address=ray_address,
        )
    )


async def arun(
    config: RunConfig | str | Path,
    *,
    output: str | Path | None = None,
    limit: int | None = None,
    models: Sequence[str] | None = None,
    observer: Observer | None = None,
    resume: bool = True,
    force: bool = False,
    add_models: bool = False,
    keep_errors: bool = False,
    handle_signals: bool = False,
    check: bool = True,
    batch: bool = False,
    cache: str | Path | bool | None = None,
    cache_refresh: bool = False,
    workers: int | str | None = None,
    ray: bool = False,
    ray_address: str | None = None,
) -> RunResult:
    """Like `run`, for code already inside an event loop.

    Re-running into the same output resumes; rows that ended in error are sent
    again unless `keep_errors`. `resume=False` starts over (with `force`, over
    existing results); `force` also resumes despite a config change that makes
    old rows incomparable. A directory holding rows of other models refuses
    models new to it unless `add_models`. `observer` receives progress events. With
    `handle_signals`, the first SIGINT/SIGTERM stops admitting work and gives
    in-flight requests `engine.grace_s` to finish; a second cancels them.
    Before anything is written, every endpoint is asked for its model list
    (`check=False` skips it): an endpoint that is down, rejects the key or
    does not know the model raises `UsageError`, one line per problem.
    """
    if not isinstance(config, RunConfig):
        config = load_config(config, output=output, limit=limit)
    all_models = config.models  # the whole list, for checking the output's model list
    config = apply_overrides(config, output=output, limit=limit, models=models)
    config = apply_overrides(config, batch=batch, cache=cache, cache_refresh=cache_refresh)
    config = with_workers(config, workers)
    if ray:
        if config.mode == "batch":
            raise UsageError("--ray and batch mode do not mix: Batch APIs need no actors")
        from llamabatch.runs.rayjoin import check_reachable
        from llamabatch.runs.raypool import require_ray

        require_ray()  # installed? (before anything is sent)
        await anyio.to_thread.run_sync(check_reachable, ray_address)  # a dead address: one line
    if config.mode == "batch":
        check_batch(config)  # a model without a Batch API is refused before anything is sent
    prompts = PromptSet(config.input, limit=config.limit, layout=Layout.of(config))
    for model in config.models:
        model.resolve_api_key()  # a missing key fails here, before anything is touched
    sim_profiles(config)  # a bad `sim = {...}` too
    scoring = Scoring.from_config(config)
    # A judge checks its model's key up front; it runs after the requests.
    judge = Judge(scoring.model_scorers, config) if scoring.model_scorers else None
    if config.output_uri is not None and (config.mode == "batch" or judge is not None):
        what = "batch mode" if config.mode == "batch" else "model-judged scorers"
        raise UsageError(f"output {config.output_uri}: {what} need(s) a local output directory")
    check_output(config.output, config.output_uri)
    if check and (problems := await preflight(config)):
        raise UsageError("\n".join([*problems, "(--no-check, or check=False, skips this check)"]))
    # The directory's lock is taken before anything in it is deleted, and held through
    # the judges and re-scoring at the end; a new directory is locked as it is created.
    with DirectoryLock(config.output, "run") as lock:
        prepare_output(config.output, resume=resume, force=force)
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        writer = ResultWriter(
            config.output, run_id, rows_per_part=config.engine.part_rows, lock=lock
        )
        done, report, resume_scan = await open_output(
            writer,
            config,
            prompts,
            keep_errors=keep_errors,
            force=force,
            add_models=add_models,
            all_models=all_models,
        )
        announce(observer, report.describe())
        writer.start(result_schema(report.extra_types, scoring.fields()))
        redactor = Redactor(config.secrets())
        responses = await anyio.to_thread.run_sync(ResponseCache.for_run, config)
        active = ActiveRun(
            config=config,
            prompts=prompts,
            done=done,
            writer=writer,
            sink=scoring.sink(writer),
            rows=RowBuilder(run_id, report.extra_types, redactor),
            tally=Tally(observer),
            handle_signals=handle_signals,
            only=resume_scan.only,
            cache=responses,
            keep_errors=keep_errors,
            ray=ray,
            ray_address=ray_address,
        )
        manifest = new_manifest(config, run_id, report.valid, report.error_count, all_models)
        write_manifest(config.output, manifest)
        try:
            status = await _drive(active, redactor, manifest, responses)
        except StorageError as exc:  # LeaseLost stays itself: the command line says more
            raise type(exc)(
                f"{exc}; the run stopped (nothing more is sent) with {writer.written} new "
                "rows stored"
            ) from None
        if scoring.active and status == "finished":
            # Judges run now; parts from earlier runs may predate the scorers.
            await rescore_judged(config.output, scoring, judge, only_stale=True)
    return RunResult(
        run_id=run_id,
        output=config.output,
        ok=active.tally.ok,
        errors=dict(active.tally.errors),
        already_done=done.count(),
        interrupted=status == "interrupted",
        models=tuple(m.name for m in config.models),
        client=manifest["client"],
    )


async def _drive(
    active: ActiveRun,
    redactor: Redactor,
    manifest: dict[str, Any],
    responses: ResponseCache | None,
) -> str:
    """Drive the engine; whatever happens, store every finished row and the manifest.

    Returns how the run ended: "finished" or "interrupted".
    """
    status = "failed"
    try:
        with redacted_logs(redactor):
            status = "interrupted" if await active.drive() else "finished"
    except BaseException as exc:
        cancelled = isinstance(exc, KeyboardInterrupt | anyio.get_cancelled_exc_class())
        status = "interrupted" if cancelled else "failed"
        raise
    finally:
        with anyio.CancelScope(shield=True):
            failure: StorageError | None = None
            # Only rows that replaced stored errors can leave a key with two rows.
            close = functools.partial(active.writer.close, dedupe_keys=active.done.errors > 0)
            try:
                await anyio.to_thread.run_sync(close)
            except StorageError as exc:  # the journal stays; the next run recovers it
                failure = exc
            if responses is not None:
                await anyio.to_thread.run_sync(responses.close)
            manifest.update(status=status, finished_at=now_iso(), **active.summary())
            try:
                write_manifest(active.config.output, manifest)
            except StorageError as exc:
                failure = failure or exc
            if failure is not None:
                raise failure
    return status
