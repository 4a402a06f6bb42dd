"""`run` / `arun`: validate, open the output, start what is needed, drive the engine."""

from __future__ import annotations

import functools
import logging
import secrets
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from llamabatch import scancache
from llamabatch.config import RunConfig, apply_overrides, load_config
from llamabatch.engine import Engine, Lane, Observer, Sink
from llamabatch.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_ROW_ERRORS, RequestError, UsageError
from llamabatch.monitor import LoopMonitor
from llamabatch.prompts import Prompt, PromptSet, ScanReport
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
from llamabatch.resume import DoneIndex, ResumeScan, incompatibilities, load_done
from llamabatch.rows import RowBuilder
from llamabatch.scoring import Scoring, is_derived, rescore
from llamabatch.servers import local_servers
from llamabatch.transport import Transport

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

FLUSH_POLL_S = 0.25
FLUSH_INTERVAL_S = 10.0  # a part at least this often while rows arrive
SYNC_INTERVAL_S = 1.0  # what a power loss can cost; a killed process loses nothing


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
    client: Mapping[str, Any] = field(default_factory=dict)  # loop lag, CPU: see monitor.py

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
    handle_signals: bool = False,
    keep_errors: bool = False,
    **overrides: Any,
) -> RunResult:
    """Run a config to completion (blocking); overrides: output, limit, models."""
    return anyio.run(
        lambda: arun(
            config,
            observer=observer,
            resume=resume,
            force=force,
            handle_signals=handle_signals,
            keep_errors=keep_errors,
            **overrides,
        )
    )


async def arun(
    config: RunConfig | str | Path,
    *,
    observer: Observer | None = None,
    resume: bool = True,
    force: bool = False,
    handle_signals: bool = False,
    keep_errors: bool = False,
    **overrides: Any,
) -> RunResult:
    """Like `run`, for code already inside an event loop.

    Rows that ended in error are sent again unless `keep_errors`. With
    `handle_signals`, the first SIGINT/SIGTERM stops admitting work and
    gives in-flight requests `engine.grace_s` to finish; a second cancels them.
    """
    if isinstance(config, RunConfig):
        config = apply_overrides(config, **overrides)
    else:
        config = load_config(config, **overrides)
    prompts = PromptSet(config.input, limit=config.limit)
    for model in config.models:
        model.resolve_api_key()  # a missing key fails here, before anything is touched
    scoring = Scoring.from_config(config)
    judge = None
    if scoring.judges:
        from llamabatch.judge import Judge

        judge = Judge(scoring.judges, config)  # checks the judges' keys up front
    _prepare_output(config.output, resume=resume, force=force)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    writer = ResultWriter(config.output, run_id)
    done, report, resume_scan = await _open(
        writer, config, prompts, keep_errors=keep_errors, force=force
    )
    writer.start(result_schema(report.extra_types, scoring.fields()))
    redactor = Redactor(config.secrets())
    run = _Run(
        config=config,
        prompts=prompts,
        done=done,
        writer=writer,
        sink=scoring.sink(writer),
        rows=RowBuilder(run_id, report.extra_types, redactor),
        tally=_Tally(observer),
        handle_signals=handle_signals,
        only=resume_scan.only,
    )
    manifest = _manifest(config, run_id, report.valid, report.error_count)
    write_manifest(config.output, manifest)
    status = "failed"
    try:
        with _redacted_logs(redactor):
            status = "interrupted" if await run.drive() else "finished"
    except BaseException as exc:
        cancelled = isinstance(exc, KeyboardInterrupt | anyio.get_cancelled_exc_class())
        status = "interrupted" if cancelled else "failed"
        raise
    finally:
        with anyio.CancelScope(shield=True):
            # Only rows that replaced stored errors can leave a key with two rows.
            close = functools.partial(writer.close, dedupe_keys=done.errors > 0)
            await anyio.to_thread.run_sync(close)
            manifest.update(status=status, finished_at=_now_iso(), **run.summary())
            write_manifest(config.output, manifest)
    if scoring.active and status == "finished":
        # Judges run now; parts from earlier runs may predate the scorers.
        await rescore(config.output, scoring, only_stale=True, judge=judge)
    return RunResult(
        run_id=run_id,
        output=config.output,
        ok=run.tally.ok,
        errors=dict(run.tally.errors),
        already_done=done.count(),
        interrupted=status == "interrupted",
        models=tuple(m.name for m in config.models),
        client=manifest["client"],
    )


async def _open(
    writer: ResultWriter, config: RunConfig, prompts: PromptSet, *, keep_errors: bool, force: bool
) -> tuple[DoneIndex, ScanReport, ResumeScan]:
    """Validate the prompt set and, when resuming, the rows already stored; then open the output.

    One pass over the prompts does both checks; a fresh output directory is
    only created once they pass, so bad input leaves nothing behind.
    """
    opened = has_results(config.output)
    if opened:
        await anyio.to_thread.run_sync(writer.open)
    cache: scancache.CacheWriter | None = None
    try:
        done = DoneIndex()
        if opened:
            done = await anyio.to_thread.run_sync(
                functools.partial(load_done, config.output, keep_errors=keep_errors)
            )
        drift = ResumeScan(done, [m.name for m in config.models], config.repeats)
        digest = await anyio.to_thread.run_sync(scancache.file_digest, config.input)
        report, cache = await _validate(config, prompts, drift, digest, reuse=opened)
        _check_scan(config, report)
        _check_resumable(config, done, drift, force=force)
        if not opened:
            await anyio.to_thread.run_sync(writer.open)
        if cache is not None:
            cache.commit(config.output, digest, report)
    except BaseException:
        if cache is not None:
            cache.discard()
        if opened:
            await anyio.to_thread.run_sync(writer.close)
        raise
    return done, report, drift


async def _validate(
    config: RunConfig, prompts: PromptSet, drift: ResumeScan, digest: str, *, reuse: bool
) -> tuple[ScanReport, scancache.CacheWriter | None]:
    """The validation pass, or, for an unchanged file already validated here, its record.

    A fresh pass also records each valid row's id (returned, for `commit`).
    """
    if reuse:
        cached = scancache.load(config.output, config.input, digest)
        if cached is not None:
            prompts.report = cached
            await anyio.to_thread.run_sync(drift.replay, scancache.stored_ids(config.output))
            return cached, None
    cache = scancache.CacheWriter()
    try:

        def visit(row_no: int, prompt: Prompt) -> None:
            drift(row_no, prompt)
            cache(row_no, prompt)

        report = await anyio.to_thread.run_sync(prompts.scan, visit)
        drift.finish()
    except BaseException:
        cache.discard()
        raise
    return report, cache


def _check_scan(config: RunConfig, report: ScanReport) -> None:
    """Bad rows stop the run (unless skipped); so do columns that would shadow results."""
    if not config.skip_invalid:
        report.raise_if_invalid()
    clashes = sorted(c for c in report.extra_types if c in COLUMNS or is_derived(c))
    if clashes:
        raise UsageError(
            f"{config.input}: column(s) {', '.join(clashes)} clash with result columns; rename them"
        )


def _check_resumable(config: RunConfig, done: DoneIndex, drift: ResumeScan, *, force: bool) -> None:
    """Refuse to mix new rows with existing ones they cannot be compared with."""
    problems = incompatibilities(config.snapshot(), read_manifest(config.output), done, drift)
    if problems and not force:
        raise UsageError(
            f"{config.output} holds rows that are not comparable with this config "
            f"({'; '.join(problems)}): use another --output, --no-resume --force to start "
            "over, or --force to keep the old rows and continue"
        )
    for problem in problems:
        log.warning("continuing despite --force: %s", problem)


@dataclass
class _Run:
    """One run's moving parts, once the output is open."""

    config: RunConfig
    prompts: PromptSet
    done: DoneIndex
    writer: ResultWriter
    sink: Sink
    rows: RowBuilder
    tally: _Tally
    handle_signals: bool
    only: Callable[[str], bytearray | None]
    monitor: LoopMonitor = field(default_factory=LoopMonitor)

    async def drive(self) -> bool:
        """Run the engine with its helpers (servers, flusher, monitor, signals); True if stopped."""
        per_model = self.prompts.count() * self.config.repeats
        pending = sum(max(0, per_model - self.done.count(m.name)) for m in self.config.models)
        self.tally.on_start(pending)
        async with Transport() as transport, local_servers(self.config) as config:
            lanes = [Lane.build(m, config, m.resolve_api_key()) for m in config.models]
            engine = Engine(
                config=config,
                lanes=lanes,
                transport=transport,
                sink=self.sink,
                rows=self.rows,
                observer=self.tally,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(_flush_periodically, self.writer)
                tg.start_soon(self.monitor.watch)
                with anyio.CancelScope() as engine_scope:
                    if self.handle_signals:
                        tg.start_soon(_watch_signals, engine, engine_scope, config.engine.grace_s)
                    await engine.run(self.prompts, self.done, self.only)
                tg.cancel_scope.cancel()
            return engine.stopping.is_set()

    def summary(self) -> dict[str, Any]:
        """What the manifest records at the end: counts and how the client fared."""
        return {
            "counts": {
                "ok": self.tally.ok,
                "error": dict(self.tally.errors),
                "already_done": self.done.count(),
            },
            "client": self.monitor.report(sent=self.tally.ok + sum(self.tally.errors.values())),
        }


async def _watch_signals(engine: Engine, scope: anyio.CancelScope, grace_s: float) -> None:
    """First SIGINT/SIGTERM: stop admitting, cancel in-flight after a grace; second: cancel now."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if engine.stopping.is_set():
                scope.cancel()
                return
            engine.stop()
            scope.deadline = anyio.current_time() + grace_s
            log.warning(
                "interrupted: no new requests; waiting up to %g s for %s in flight "
                "(interrupt again to cancel them now)",
                grace_s,
                "the requests",
            )


@contextmanager
def _redacted_logs(redactor: Redactor) -> Iterator[None]:
    """Keep secrets out of every llamabatch log record for the duration of a run."""

    def scrub(record: logging.LogRecord) -> bool:
        record.msg = redactor(record.getMessage())
        record.args = ()
        return True

    logger = logging.getLogger("llamabatch")
    logger.addFilter(scrub)
    try:
        yield
    finally:
        logger.removeFilter(scrub)


def has_results(output: Path) -> bool:
    return output.is_dir() and (bool(part_files(output)) or (output / JOURNAL_DIR).is_dir())


def _prepare_output(output: Path, *, resume: bool, force: bool) -> None:
    """With --no-resume: refuse to replace results unless forced, then clear them."""
    if resume or not has_results(output):
        return
    if not force:
        raise UsageError(
            f"{output} already holds results; --no-resume would replace them: "
            "add --force, or choose another --output"
        )
    for path in part_files(output):
        path.unlink()
    shutil.rmtree(output / JOURNAL_DIR, ignore_errors=True)
    shutil.rmtree(output / scancache.CACHE_DIR, ignore_errors=True)
    (output / MANIFEST).unlink(missing_ok=True)


async def _flush_periodically(writer: ResultWriter) -> None:
    """Move journalled rows into Parquet parts and fsync the journal, off the event loop."""
    last_part = last_sync = time.monotonic()
    while True:
        await anyio.sleep(FLUSH_POLL_S)
        now = time.monotonic()
        with anyio.CancelScope(shield=True):
            if writer.pending >= writer.rows_per_part or (
                writer.pending and now - last_part >= FLUSH_INTERVAL_S
            ):
                closed = writer.rotate()
                if closed is not None:
                    await anyio.to_thread.run_sync(writer.write_part, closed)
                last_part = now
            if now - last_sync >= SYNC_INTERVAL_S:
                await anyio.to_thread.run_sync(writer.sync)
                last_sync = now


def _manifest(config: RunConfig, run_id: str, valid: int, invalid: int) -> dict[str, Any]:
    snapshot = config.snapshot()
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
        "config": snapshot,
        "versions": versions(),
        "counts": {},
        "client": {},
        "previous_runs": history,
    }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
