"""The `llamabatch` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llamabatch._version import __version__
from llamabatch.cli.batches import add_batches_command
from llamabatch.cli.evaluate import add_evaluation_commands
from llamabatch.cli.options import add_field_options, field_values
from llamabatch.cli.validate import add_validate_command
from llamabatch.cli.viewing import add_view_command
from llamabatch.errors import EXIT_INTERRUPTED, EXIT_USAGE, LeaseLost, StorageError, UsageError
from llamabatch.escape import terminal

if TYPE_CHECKING:
    from llamabatch.cli.progress import ProgressBar
    from llamabatch.runs.runner import RunResult


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamabatch",
        description="Async batch and evaluation runner for LLM chat APIs.",
    )
    parser.add_argument("--version", action="version", version=f"llamabatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="send a prompt set to every configured model, write Parquet results",
        description="Send every prompt to every model in CONFIG and write one Parquet row "
        "per (model, prompt, sample). Re-running resumes: rows already ok are skipped. "
        "Exit codes: 0 all rows ok, 3 some rows failed, 2 bad config or input (nothing "
        "sent), 130 interrupted (finished rows are saved).",
    )
    run.add_argument("config", type=Path, help="run config (TOML or YAML)")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N prompts")
    run.add_argument("--models", metavar="A,B", help="only these models (by name)")
    run.add_argument("-o", "--output", metavar="DIR", help="results directory")
    run.add_argument(
        "--no-resume", action="store_true", help="start fresh instead of skipping finished rows"
    )
    run.add_argument(
        "--keep-errors",
        action="store_true",
        help="on resume, do not resend rows that ended in error (default: resend them)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="with --no-resume: replace existing results; otherwise: resume even if the "
        "config changed in a way that makes old rows incomparable",
    )
    run.add_argument(
        "--add-models",
        action="store_true",
        help="resume into a directory that holds rows of other models, adding this config's "
        "new models to it (without it, a model new to the directory is refused)",
    )
    run.add_argument(
        "--no-check",
        action="store_true",
        help="skip the preflight that asks each endpoint for its model list before sending",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    run.add_argument(
        "--batch",
        action="store_true",
        help='send through the providers\' Batch APIs (as [run] mode = "batch")',
    )
    run.add_argument(
        "--cache",
        nargs="?",
        const=True,
        metavar="PATH",
        help="answer repeated requests from a response cache (default file: "
        "~/.cache/llamabatch/responses.sqlite3)",
    )
    run.add_argument(
        "--cache-refresh",
        action="store_true",
        help="with a cache: ask again and overwrite the stored answers",
    )
    run.add_argument(
        "--workers",
        metavar="N",
        help='run the engine in N processes sharing the run\'s limits ("auto": one per core; '
        "as [engine] workers)",
    )
    run.add_argument(
        "--ray",
        action="store_true",
        help="run the engine as Ray actors sharing one limiter (on the cluster at "
        "--ray-address or $RAY_ADDRESS, else a local one; pip install 'llamabatch[ray]')",
    )
    run.add_argument("--ray-address", metavar="ADDR", help="with --ray: the cluster to join")
    run.set_defaults(handler=_run)

    add_validate_command(commands)
    _add_check(commands)

    sim = commands.add_parser(
        "sim",
        help="serve the built-in simulated LLM (OpenAI, Llama API and Ollama formats)",
        description="Serve simulated models at http://HOST:PORT/v1 until interrupted "
        "(the native Llama API at /llama/v1, Ollama's API at the root). "
        "Model ids containing maverick, scout, 70b or 8b get Llama-like speed and capacity "
        "profiles; the speed and capacity options below (--ttft-s ... --prefill-tokens-per-s) "
        "set those of every other model, and the fault options apply to every model.",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    sim.add_argument("--rpm-limit", type=float, help="server-side request limit per window")
    sim.add_argument(
        "--rpm-window-s", type=float, default=60.0, help="the limit's sliding window (default 60)"
    )
    sim.add_argument("--api-key", help="require this bearer key")
    sim.add_argument("--seed", type=int, default=0, help="changes every generated text")
    from llamabatch.sim.profile import SimProfile

    add_field_options(sim, SimProfile)
    sim.set_defaults(handler=_sim)
    add_evaluation_commands(commands)
    add_batches_command(commands)
    add_view_command(commands)
    return parser


def _add_check(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="check that every configured endpoint answers, before a long run",
        description="For every model in CONFIG: list the server's models (reachable? key "
        "accepted? model listed?) and send one chat request for a single token (its TTFT). "
        "Servers the config starts (simulator, local model) are started for the check. "
        "Exit 0 when every model answered, 1 otherwise, 2 for a bad config.",
    )
    check.add_argument("config", type=Path, help="run config (TOML or YAML)")
    check.add_argument("--models", metavar="A,B", help="only these models (by name)")
    check.add_argument("--timeout-s", type=float, default=30.0, help="per request (default: 30)")
    check.set_defaults(handler=_check)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_TerminalFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    warnings.showwarning = _show_warning
    stdout, sys.stdout = sys.stdout, _TerminalStream(sys.stdout)
    try:
        code: int = args.handler(args)
    except UsageError as exc:
        for line in str(exc).splitlines():
            print(terminal(f"llamabatch: error: {line}"), file=sys.stderr)
        return EXIT_USAGE
    finally:
        sys.stdout = stdout
    return code


class _TerminalStream:
    """Standard output with control characters escaped: server text cannot drive the terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(terminal(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return terminal(super().format(record))


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    from tqdm import tqdm

    tqdm.write(terminal(f"llamabatch: warning: {message}"), file=sys.stderr)  # above any bar


def _run(args: argparse.Namespace) -> int:
    from llamabatch.cli.progress import ProgressBar
    from llamabatch.results.remote import shown
    from llamabatch.runs.gcsetting import restore, tune_for_the_engine

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    progress = ProgressBar(disable=args.quiet)
    # Here, not in the library: GC and the switch interval are global state a host owns.
    before = tune_for_the_engine()  # restored after the run
    try:
        # Log lines are written above the bar, never onto it (a quiet run has no bar).
        with contextlib.nullcontext() if args.quiet else _above_the_bar():
            result = _call_run(args, progress, models)
    except KeyboardInterrupt:
        result = None
    except LeaseLost as exc:  # another run writes there now: its rows wait here
        progress.close()
        how = f"once that run is done, publish this run's rows with: {_resume_command(args)}"
        raise LeaseLost(f"{exc}; {how}") from None
    except StorageError as exc:  # a full disk: what was stored stays; say how to go on
        progress.close()
        raise StorageError(f"{exc}; make room, then resume with: {_resume_command(args)}") from None
    finally:
        restore(before)
    progress.close()
    if result is None or result.interrupted:
        print(
            "llamabatch: interrupted; finished rows are saved. Resume with: "
            + _resume_command(args),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not result.ok and not result.error_count and result.already_done:
        if not args.quiet:
            stored = f"{result.already_done:,} rows already stored in {shown(result.output)}"
            print(f"nothing to do: {stored}")
        return result.exit_code
    if not args.quiet:
        _print_summary(result)
    from llamabatch.results.manifest import client_warning

    if (warning := client_warning(dict(result.client))) is not None:
        print(f"llamabatch: {warning}", file=sys.stderr)
    return result.exit_code


def _above_the_bar() -> contextlib.AbstractContextManager[None]:
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def _call_run(
    args: argparse.Namespace, progress: ProgressBar, models: list[str] | None
) -> RunResult:
    from llamabatch.runs.runner import run

    return run(
        args.config,
        observer=progress,
        resume=not args.no_resume,
        force=args.force,
        add_models=args.add_models,
        handle_signals=True,
        keep_errors=args.keep_errors,
        check=not args.no_check,
        output=args.output,
        limit=args.limit,
        models=models,
        batch=args.batch,
        cache=args.cache,
        cache_refresh=args.cache_refresh,
        workers=args.workers,
        ray=args.ray or args.ray_address is not None,
        ray_address=args.ray_address,
    )


def _print_summary(result: RunResult) -> None:
    from llamabatch.report.summary import format_table, summarize
    from llamabatch.results import read_manifest
    from llamabatch.results.remote import shown

    snapshot = (read_manifest(result.output) or {}).get("config") or {}
    slo = snapshot.get("slo") or None
    print(format_table(summarize(result.dataframe(), result.models, slo, scores=True)))
    rate = (snapshot.get("engine") or {}).get("request_rate")
    if rate:
        arrival = snapshot["engine"]["arrival"]
        print(f"\nopen loop: target {rate:g} requests/s per model ({arrival} arrivals)")
    print(f"\nresults: {shown(result.output)}  (run {result.run_id})")
    if result.error_count:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(result.errors.items()))
        print(f"{result.error_count} row(s) failed ({kinds}); run again to retry them")


def _resume_command(args: argparse.Namespace) -> str:
    parts = ["llamabatch", "run", str(args.config)]
    if args.output:
        parts += ["--output", str(args.output)]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    if args.models:
        parts += ["--models", args.models]
    if args.keep_errors:
        parts.append("--keep-errors")
    if args.add_models:
        parts.append("--add-models")
    if args.no_check:
        parts.append("--no-check")
    if args.batch:
        parts.append("--batch")
    if args.cache is not None:
        parts += ["--cache"] + ([] if args.cache is True else [str(args.cache)])
    if args.workers:
        parts += ["--workers", args.workers]
    if args.ray:
        parts.append("--ray")
    if args.ray_address:
        parts += ["--ray-address", args.ray_address]
    return " ".join(shlex.quote(p) for p in parts)


def _check(args: argparse.Namespace) -> int:
    from llamabatch.config.load import load_config
    from llamabatch.runs.preflight import format_results, run_check

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    results = run_check(load_config(args.config, models=models), timeout_s=args.timeout_s)
    print(format_results(results))
    return 0 if all(r.ok for r in results) else 1


def _sim(args: argparse.Namespace) -> int:
    import anyio

    from llamabatch.sim import SimProfile
    from llamabatch.sim.server import SimServer

    default = SimProfile(**field_values(args, SimProfile))

    async def serve() -> None:
        server = SimServer(
            default=default,
            seed=args.seed,
            rpm_limit=args.rpm_limit,
            rpm_window_s=args.rpm_window_s,
            api_key=args.api_key,
            host=args.host,
            port=args.port,
        )
        async with server:
            print(f"llamabatch sim serving {server.base_url}  (Ctrl-C to stop)", flush=True)
            await anyio.sleep_forever()

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        return 0
    return 0
