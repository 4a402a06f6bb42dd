"""The `llamabatch` command."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamabatch import __version__
from llamabatch.errors import UsageError
from llamabatch.monitor import client_warning

EXIT_USAGE = 2
EXIT_ROW_ERRORS = 3
EXIT_INTERRUPTED = 130


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
    run.add_argument("-o", "--output", type=Path, metavar="DIR", help="results directory")
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
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    run.set_defaults(handler=_run)

    validate = commands.add_parser(
        "validate",
        help="check a prompt set and report every invalid row",
        description="Read a prompt set (JSONL, Parquet or CSV) and report invalid rows "
        "with file and line. Exit 0 when valid, 2 otherwise.",
    )
    validate.add_argument("prompts", type=Path, help="prompt file")
    validate.set_defaults(handler=_validate)

    _add_check(commands)

    sim = commands.add_parser(
        "sim",
        help="serve the built-in simulated LLM (OpenAI, Llama API and Ollama formats)",
        description="Serve simulated models at http://HOST:PORT/v1 until interrupted "
        "(the native Llama API at /llama/v1, Ollama's API at the root). "
        "Model ids containing maverick, scout, 70b or 8b get Llama-like speed profiles; "
        "the options below set the profile of every other model.",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    sim.add_argument("--ttft-s", type=float, default=0.2, help="time to first token")
    sim.add_argument("--tokens-per-s", type=float, default=80.0, help="decode speed")
    sim.add_argument("--output-tokens", type=int, default=120, help="mean reply length")
    sim.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 503")
    sim.add_argument("--rate-limit-rate", type=float, default=0.0, help="fraction answered 429")
    sim.add_argument("--disconnect-rate", type=float, default=0.0, help="fraction cut mid-stream")
    sim.add_argument("--rpm-limit", type=float, help="server-side request limit per window")
    sim.add_argument(
        "--rpm-window-s", type=float, default=60.0, help="the limit's sliding window (default 60)"
    )
    sim.add_argument("--jitter", type=float, default=0.15, help="relative spread of TTFT and speed")
    sim.add_argument("--api-key", help="require this bearer key")
    sim.add_argument("--seed", type=int, default=0, help="changes every generated text")
    sim.add_argument(
        "--answers", metavar="JSONL", help="answer the prompts of this set with their `expected`"
    )
    sim.add_argument(
        "--accuracy", type=float, default=1.0, help="share of --answers prompts answered right"
    )
    sim.set_defaults(handler=_sim)
    _add_report(commands)
    _add_compare(commands)
    _add_score(commands)
    _add_sweep(commands)
    return parser


def _add_sweep(commands: Any) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run a config at rising load; find the highest that meets the SLOs",
        description="Run CONFIG once per load level — open-loop request rates (per model) or "
        "closed-loop concurrencies — each into OUTPUT/<level>, and print per level and model "
        "the achieved rate, TTFT and latency percentiles and, with an [slo] table in the "
        "config, the share of requests meeting the objectives, the goodput and the highest "
        "level that meets them. Exit 0, or 2 for bad input.",
    )
    sweep.add_argument("config", type=Path, help="run config (TOML or YAML)")
    levels = sweep.add_mutually_exclusive_group(required=True)
    levels.add_argument("--rates", metavar="R1,R2", help="open-loop requests/s per model")
    levels.add_argument("--concurrency", metavar="C1,C2", help="closed-loop concurrencies")
    sweep.add_argument("--limit", type=int, metavar="N", help="only the first N prompts per level")
    sweep.add_argument("--models", metavar="A,B", help="only these models (by name)")
    sweep.add_argument(
        "-o", "--output", type=Path, metavar="DIR", help="root of the per-level results"
    )
    sweep.set_defaults(handler=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    import anyio

    from llamabatch.config import load_config
    from llamabatch.sweep import parse_levels, render, sweep

    levels = parse_levels(args.rates, args.concurrency)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    config = load_config(args.config, limit=args.limit, models=models)
    root = args.output or config.output / "sweep"
    table = anyio.run(sweep, config, levels, root)
    print(render(table, dict(config.slo)), end="")
    return 0


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


def _add_score(commands: Any) -> None:
    score = commands.add_parser(
        "score",
        help="recompute scores from stored outputs (no model calls, judges excepted)",
        description="Recompute cost_usd and every score_<name> column of RESULTS from the "
        "stored outputs, with the scorers of --config or else of the run's manifest. Models "
        "are not called; judge scorers call their model only for rows without a stored "
        "verdict for the same request. Exit codes: 0 done, 3 some judge verdicts failed "
        "(recorded in verdict_<name>), 2 usage or config error.",
    )
    score.add_argument("results", type=Path, help="results directory")
    score.add_argument("--config", type=Path, help="take scorers and prices from this config")
    score.set_defaults(handler=_score)


def _score(args: argparse.Namespace) -> int:
    import anyio

    from llamabatch.rescoring import score_results

    report = anyio.run(score_results, args.results, args.config)
    print(f"{args.results}: rescored {report.rows} rows in {report.parts} part(s)", end="")
    if report.judged:
        print(f"; {report.judged} judge call(s), {report.judge_errors} failed", end="")
    print()
    return EXIT_ROW_ERRORS if report.judge_errors else 0


def _add_report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="compare models from results directories: tables, and charts with -o",
        description="Per-model tables (errors, TTFT, latency, throughput, tokens, cost, scores "
        "with 95%% confidence intervals) and pairwise comparisons on shared prompts, as "
        "Markdown on stdout. With -o FILE.html, also one self-contained HTML page with charts "
        "and the outputs of each prompt side by side; with -o FILE.md, the Markdown.",
    )
    report.add_argument("results", type=Path, nargs="+", help="results directories")
    report.add_argument("-o", "--output", type=Path, metavar="FILE", help="write .html or .md")
    report.add_argument(
        "--max-prompts",
        type=int,
        default=200,
        metavar="N",
        help="prompts shown side by side in the HTML (default 200)",
    )
    report.set_defaults(handler=_report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    warnings.showwarning = _show_warning
    try:
        code: int = args.handler(args)
    except UsageError as exc:
        print(f"llamabatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    print(f"llamabatch: warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from llamabatch.progress import ProgressBar
    from llamabatch.runner import run

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    progress = ProgressBar(disable=args.quiet)
    try:
        result = run(
            args.config,
            observer=progress,
            resume=not args.no_resume,
            force=args.force,
            handle_signals=True,
            keep_errors=args.keep_errors,
            output=args.output,
            limit=args.limit,
            models=models,
        )
    except KeyboardInterrupt:
        result = None
    progress.close()
    if result is None or result.interrupted:
        print(
            "llamabatch: interrupted; finished rows are saved. Resume with: "
            + _resume_command(args),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not args.quiet:
        from llamabatch.results import read_manifest
        from llamabatch.summary import format_table, summarize

        snapshot = (read_manifest(result.output) or {}).get("config") or {}
        slo = snapshot.get("slo") or None
        print(format_table(summarize(result.dataframe(), result.models, slo)))
        rate = (snapshot.get("engine") or {}).get("request_rate")
        if rate:
            arrival = snapshot["engine"]["arrival"]
            print(f"\nopen loop: target {rate:g} requests/s per model ({arrival} arrivals)")
        print(f"\nresults: {result.output}  (run {result.run_id})")
        if result.error_count:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(result.errors.items()))
            print(f"{result.error_count} row(s) failed ({kinds}); run again to retry them")
    if (warning := client_warning(dict(result.client))) is not None:
        print(f"llamabatch: {warning}", file=sys.stderr)
    return result.exit_code


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
    return " ".join(shlex.quote(p) for p in parts)


def _validate(args: argparse.Namespace) -> int:
    from llamabatch.prompts import PromptSet

    prompts = PromptSet(args.prompts)
    report = prompts.scan()
    for message in report.errors:
        print(message, file=sys.stderr)
    hidden = report.error_count - len(report.errors)
    if hidden:
        print(f"... and {hidden} more", file=sys.stderr)
    status = "valid" if not report.error_count else f"{report.error_count} invalid"
    print(f"{args.prompts}: {report.rows} rows, {report.valid} valid, {status}")
    return 0 if not report.error_count else EXIT_USAGE


def _check(args: argparse.Namespace) -> int:
    from llamabatch.check import format_results, run_check
    from llamabatch.config import load_config

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    results = run_check(load_config(args.config, models=models), timeout_s=args.timeout_s)
    print(format_results(results))
    return 0 if all(r.ok for r in results) else 1


def _add_compare(commands: Any) -> None:
    from llamabatch.thresholds import Thresholds

    t = Thresholds()
    compare = commands.add_parser(
        "compare",
        help="check a candidate run against a baseline: exit 1 on regression",
        description="Match rows by (model, prompt_id, sample) and apply regression rules per "
        "model: a score drop beyond --max-score-drop that a paired test on the shared prompts "
        "finds significant; p50/p90 latency or TTFT above a ratio of the baseline's; an error "
        "rate rise. Prompts that flipped from pass to fail are listed. Prints Markdown. "
        "Exit codes: 0 no regression, 1 regression, 2 usage or input error.",
    )
    compare.add_argument("baseline", type=Path, help="baseline results directory")
    compare.add_argument("candidate", type=Path, help="candidate results directory")
    compare.add_argument(
        "--map",
        action="append",
        metavar="OLD=NEW",
        help="compare baseline model OLD with candidate model NEW (repeatable)",
    )
    thresholds = (
        ("max_score_drop", "D", "largest tolerated drop of a mean score"),
        ("alpha", "A", "significance level of the paired test"),
        ("max_p50_ratio", "R", "largest tolerated candidate/baseline p50 latency and TTFT"),
        ("max_p90_ratio", "R", "the same for p90"),
        ("min_latency_increase_s", "S", "smaller latency increases never regress"),
        ("max_error_increase", "E", "largest tolerated error-rate rise, 0..1"),
    )
    for name, metavar, text in thresholds:
        compare.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=getattr(t, name),
            metavar=metavar,
            help=f"{text} (%(default)s)",
        )
    add = compare.add_argument
    add("--max-flips", type=int, metavar="N", help="fail when more prompts flip pass -> fail")
    add("--no-latency", action="store_true", help="skip latency and TTFT rules")
    add("--junit", type=Path, metavar="FILE", help="write JUnit XML")
    add("--json", type=Path, metavar="FILE", help="write the findings as JSON")
    add(
        "--markdown",
        type=Path,
        metavar="FILE",
        help="append the Markdown (e.g. $GITHUB_STEP_SUMMARY)",
    )
    compare.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    from llamabatch.compare import compare, parse_mapping
    from llamabatch.compare_output import render_markdown, write_json, write_junit
    from llamabatch.thresholds import Thresholds

    thresholds = Thresholds(
        max_score_drop=args.max_score_drop,
        alpha=args.alpha,
        max_p50_ratio=args.max_p50_ratio,
        max_p90_ratio=args.max_p90_ratio,
        min_latency_increase_s=args.min_latency_increase_s,
        max_error_increase=args.max_error_increase,
        max_flips=args.max_flips,
        latency=not args.no_latency,
    )
    result = compare(
        args.baseline, args.candidate, mapping=parse_mapping(args.map), thresholds=thresholds
    )
    markdown = render_markdown(result)
    print(markdown, end="")
    if args.markdown is not None:
        with args.markdown.open("a", encoding="utf-8") as fh:
            fh.write(markdown)
    if args.junit is not None:
        write_junit(result, args.junit)
    if args.json is not None:
        write_json(result, args.json)
    return 1 if result.regressed else 0


def _report(args: argparse.Namespace) -> int:
    from llamabatch.report import build_report, render_markdown
    from llamabatch.resultsets import load_results

    report = build_report(load_results(args.results))
    markdown = render_markdown(report)
    print(markdown, end="")
    if args.output is not None:
        if args.output.suffix.lower() in (".md", ".markdown"):
            args.output.write_text(markdown, encoding="utf-8")
        else:
            from llamabatch.report_html import render_html

            html = render_html(report, max_prompts=args.max_prompts)
            args.output.write_text(html, encoding="utf-8")
        print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


def _sim(args: argparse.Namespace) -> int:
    import anyio

    from llamabatch.sim import SimProfile, SimServer

    default = SimProfile(
        ttft_s=args.ttft_s,
        tokens_per_s=args.tokens_per_s,
        output_tokens=args.output_tokens,
        error_rate=args.error_rate,
        rate_limit_rate=args.rate_limit_rate,
        disconnect_rate=args.disconnect_rate,
        jitter=args.jitter,
        answers=args.answers,
        accuracy=args.accuracy,
    )

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


if __name__ == "__main__":
    sys.exit(main())
