"""`llamabatch report`, `compare`, `score` and `sweep`: reading results, judging runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from llamabatch.cli.options import add_field_options, field_values
from llamabatch.errors import EXIT_ROW_ERRORS


def add_evaluation_commands(commands: Any) -> None:
    _add_report(commands)
    _add_compare(commands)
    _add_score(commands)
    _add_sweep(commands)


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

    from llamabatch.config.load import load_config
    from llamabatch.runs.sweep import parse_levels, render, sweep

    levels = parse_levels(args.rates, args.concurrency)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    config = load_config(args.config, limit=args.limit, models=models)
    root = args.output or config.output / "sweep"
    table = anyio.run(sweep, config, levels, root)
    print(render(table, dict(config.slo)), end="")
    return 0


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
    score.add_argument("results", type=results_location, help="results directory (or URI)")
    score.add_argument("--config", type=Path, help="take scorers and prices from this config")
    score.set_defaults(handler=_score)


def _score(args: argparse.Namespace) -> int:
    import anyio

    from llamabatch.results.remote import shown
    from llamabatch.runs.score import score_results

    report = anyio.run(score_results, args.results, args.config)
    print(f"{shown(args.results)}: rescored {report.rows} rows in {report.parts} part(s)", end="")
    if report.judged:
        print(f"; {report.judged} judge call(s), {report.judge_errors} failed", end="")
    print()
    return EXIT_ROW_ERRORS if report.judge_errors else 0


def _add_report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="compare models from results directories: tables, and charts with -o",
        description="A headline (which model wins on what, by how much, how surely), per-model "
        "tables (errors, TTFT, latency, throughput, tokens, cost, scores with 95%% confidence "
        "intervals), the Pareto frontier of a score against latency and cost, and pairwise "
        "comparisons on shared prompts (across runs: each model against its namesake), as "
        "Markdown on stdout. Successive runs of one config add a trend. With -o FILE.html, "
        "also one self-contained HTML page with charts and the outputs of each prompt side by "
        "side; with -o FILE.md, the Markdown.",
    )
    report.add_argument("results", type=results_location, nargs="+", help="results directories")
    report.add_argument("-o", "--output", type=Path, metavar="FILE", help="write .html or .md")
    report.add_argument(
        "--max-prompts",
        type=int,
        default=200,
        metavar="N",
        help="prompts shown side by side in the HTML (default 200)",
    )
    report.add_argument(
        "--pareto-score",
        metavar="NAME",
        help="the score the Pareto chart and the trend follow (default: the first)",
    )
    report.set_defaults(handler=_report)


def results_location(text: str) -> Path:
    """A results directory, or for a URI (s3://...) the local directory standing in for it."""
    from llamabatch.config.outputs import output_location
    from llamabatch.results.remote import stage

    path, uri = output_location(text)
    if uri is not None:
        stage(path, uri)
    return path


def _add_compare(commands: Any) -> None:
    from llamabatch.report.thresholds import Thresholds

    compare = commands.add_parser(
        "compare",
        help="check a candidate run against a baseline: exit 1 on regression",
        description="Match rows by (model, prompt_id, sample) and apply regression rules per "
        "model: a score drop beyond --max-score-drop that a paired test on the shared prompts "
        "finds significant; p50/p90 latency or TTFT above a ratio of the baseline's; an error "
        "rate rise. Prompts that flipped from pass to fail are listed. Prints Markdown. "
        "Exit codes: 0 no regression, 1 regression, 2 usage or input error.",
    )
    compare.add_argument("baseline", type=results_location, help="baseline results directory")
    compare.add_argument("candidate", type=results_location, help="candidate results directory")
    compare.add_argument(
        "--map",
        action="append",
        metavar="OLD=NEW",
        help="compare baseline model OLD with candidate model NEW (repeatable)",
    )
    add_field_options(compare, Thresholds)
    add = compare.add_argument
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
    from llamabatch.report.comparison import compare, parse_mapping
    from llamabatch.report.comparison_output import render_markdown, write_json, write_junit
    from llamabatch.report.thresholds import Thresholds

    thresholds = Thresholds(**field_values(args, Thresholds))
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
    from llamabatch.report.resultset import load_results
    from llamabatch.report.tables import build_report, render_markdown

    report = build_report(load_results(args.results), score=args.pareto_score)
    markdown = render_markdown(report)
    print(markdown, end="")
    if args.output is not None:
        if args.output.suffix.lower() in (".md", ".markdown"):
            args.output.write_text(markdown, encoding="utf-8")
        else:
            from llamabatch.report.html import render_html

            html = render_html(report, max_prompts=args.max_prompts)
            args.output.write_text(html, encoding="utf-8")
        print(f"\nwrote {args.output}", file=sys.stderr)
    return 0
