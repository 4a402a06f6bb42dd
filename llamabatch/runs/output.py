"""A run's output directory: check the input and the stored rows together, then open it.

One validation pass over the prompts also checks that rows already stored
(when resuming) can be mixed with this config's; a fresh directory is only
created once both checks pass, so bad input leaves nothing behind.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.errors import UsageError
from llamabatch.prompts import Prompt, PromptSet, ScanReport, scancache
from llamabatch.results import (
    COLUMNS,
    DoneIndex,
    ResultWriter,
    load_done,
    read_manifest,
)
from llamabatch.results.batchlog import BATCH_DIR, BatchLog
from llamabatch.results.identity import incompatibilities, model_list_changes, other_prompts
from llamabatch.results.journal import JOURNAL_DIR
from llamabatch.results.manifest import MANIFEST, versions
from llamabatch.results.parts import Parts
from llamabatch.results.remote import remote_of, stage
from llamabatch.results.resume import ResumeScan
from llamabatch.results.schema import is_derived
from llamabatch.runs.rowcheck import RowCheck

log = logging.getLogger(__name__)


async def open_output(
    writer: ResultWriter,
    config: RunConfig,
    prompts: PromptSet,
    *,
    keep_errors: bool,
    force: bool,
    add_models: bool = False,
    all_models: Sequence[ModelConfig] | None = None,
) -> tuple[DoneIndex, ScanReport, ResumeScan]:
    """Validate the prompt set and, when resuming, the rows already stored; then open the output.

    One pass over the prompts does both checks; a fresh output directory is
    only created once they pass, so bad input leaves nothing behind.
    `all_models` is the config's whole model list (before `--models` narrowed it).
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
        rows_check = RowCheck(config)
        digest = await anyio.to_thread.run_sync(
            scancache.file_digest, config.input, prompts.layout.key()
        )
        # A cached validation holds for this file checked against these models only.
        digest = f"{digest}-{rows_check.signature}"
        report, cache = await _validate(config, prompts, drift, digest, rows_check, reuse=opened)
        _check_scan(config, report)
        models = config.models if all_models is None else all_models
        check = functools.partial(_check_resumable, config, done, drift, models)
        await anyio.to_thread.run_sync(functools.partial(check, force=force, add=add_models))
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
    config: RunConfig,
    prompts: PromptSet,
    drift: ResumeScan,
    digest: str,
    check: RowCheck,
    *,
    reuse: bool,
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

        scan = functools.partial(prompts.scan, visit, check, keep=True)
        report = await anyio.to_thread.run_sync(scan)
        drift.finish()
    except BaseException:
        cache.discard()
        raise
    return report, cache


def _check_scan(config: RunConfig, report: ScanReport) -> None:
    """Bad rows stop the run (unless skipped); so do columns that would shadow results."""
    if not report.rows:
        raise UsageError(f"{config.input}: the prompt file is empty; there is nothing to send")
    if not config.skip_invalid:
        report.raise_if_invalid()
    if not report.valid:
        raise UsageError(
            f"{config.input}: none of its {report.rows:,} rows is valid; "
            f"run `llamabatch validate {config.input}` to list the problems"
        )
    clashes = sorted(c for c in report.extra_types if c in COLUMNS or is_derived(c))
    if clashes:
        raise UsageError(
            f"{config.input}: column(s) {', '.join(clashes)} clash with result columns; rename them"
        )


def _check_resumable(
    config: RunConfig,
    done: DoneIndex,
    drift: ResumeScan,
    models: Sequence[ModelConfig],
    *,
    force: bool,
    add: bool,
) -> None:
    """Refuse to mix new rows with existing ones they cannot be compared with (blocking)."""
    previous = read_manifest(config.output)
    problems = incompatibilities(config.snapshot(), previous, done, drift)
    if (other := other_prompts(config.output, config.input, previous, drift)) is not None:
        problems.append(other)
    listed = [{"name": m.name, "provider": m.provider, "model": m.model} for m in models]
    changed, added = model_list_changes(listed, previous, done)
    problems += changed
    if added and not add and not problems and not force:
        raise UsageError(
            f"{config.output} holds rows of other models ({', '.join(sorted(done.identities))});"
            f" this config adds {', '.join(added)}: add --add-models to add them to it, "
            "or use another --output"
        )
    if added and not add:
        problems.append(f"this config adds model(s) {', '.join(added)} (--add-models)")
    if problems and not force:
        raise UsageError(
            f"{config.output} holds rows that are not comparable with this config "
            f"({'; '.join(problems)}): use another --output, --no-resume --force to start "
            "over, or --force to keep the old rows and continue"
        )
    for problem in problems:
        log.warning("continuing despite --force: %s", problem)
    if added:
        log.info("adding model(s) %s to %s", ", ".join(added), config.output)


def announce(observer: Any, line: str) -> None:
    """Say what the input is (`x.json: ShareGPT format, 3 conversations`) to an observer that
    listens (`on_input`), else to the log."""
    notify = getattr(observer, "on_input", None)
    if notify is not None:
        notify(line)
    else:
        log.info("%s", line)


def check_output(output: Path, uri: str | None = None) -> None:
    """Refuse an output that is not a directory, or one this process cannot write into.

    With a `uri`, `output` is its staging directory: both must take writes.

    Writability is tried, not inferred from permission bits (root ignores those, a
    read-only file system does not): a probe file is made and removed in the
    directory, or in its nearest existing parent when it is still to be created.
    """
    where = "(set [run] output, or --output)"
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} is not a directory {where}")
    parent = output
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"output {output}: {parent} is not a directory {where}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".llamabatch-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        message = f"output {output}: cannot write in {parent}: {exc.strerror} {where}"
        raise UsageError(message) from None
    if uri is not None:
        stage(output, uri)
        remote = remote_of(output)
        assert remote is not None
        remote.probe()


def has_results(output: Path) -> bool:
    return output.is_dir() and (bool(Parts(output).paths) or (output / JOURNAL_DIR).is_dir())


def prepare_output(output: Path, *, resume: bool, force: bool) -> None:
    """With --no-resume: refuse to replace results unless forced, then clear them."""
    if resume or not has_results(output):
        return
    if not force:
        raise UsageError(
            f"{output} already holds results; --no-resume would replace them: "
            "add --force, or choose another --output"
        )
    parts = Parts(output)
    for path in parts.paths:
        parts.delete(path)
    shutil.rmtree(output / JOURNAL_DIR, ignore_errors=True)
    shutil.rmtree(output / scancache.CACHE_DIR, ignore_errors=True)
    (output / MANIFEST).unlink(missing_ok=True)
    if parts.remote is not None:
        parts.remote.delete(parts.remote.path(MANIFEST))
    if in_flight := [c.batch_id or c.name for c in BatchLog(output).pending()]:
        log.warning("--no-resume --force forgets batches in flight: %s", ", ".join(in_flight))
    shutil.rmtree(output / BATCH_DIR, ignore_errors=True)


def new_manifest(
    config: RunConfig,
    run_id: str,
    valid: int,
    invalid: int,
    all_models: Sequence[ModelConfig] | None = None,
) -> dict[str, Any]:
    """A run's manifest as it starts; `all_models`: the config's models before `--models`."""
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
        "started_at": now_iso(),
        "finished_at": None,
        "input": {"path": str(config.input), "valid_rows": valid, "invalid_rows": invalid},
        "config": snapshot,
        # The config's whole model list: a later run adding a model is told apart from
        # one that ran some of them (`--models`).
        "models": [m.name for m in (config.models if all_models is None else all_models)],
        "versions": versions(),
        "counts": {},
        "client": {},
        "previous_runs": history,
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
