"""`llamabatch validate`: what a prompt file will be read as and sent, without sending it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from llamabatch.errors import EXIT_USAGE, UsageError

if TYPE_CHECKING:
    from llamabatch.config import ModelConfig, RunConfig
    from llamabatch.prompts import Layout, Prompt

CONFIG_SUFFIXES: Final = (".toml", ".yaml", ".yml")
MAX_SHOWN_CHARS: Final = 400  # longer strings in shown requests are cut (the count is kept)


def add_validate_command(commands: Any) -> None:
    from llamabatch.prompts.formats import FORMATS

    validate = commands.add_parser(
        "validate",
        help="show how a prompt set is read and sent, and every invalid row",
        description="Read a prompt set (JSON lines, JSON, Parquet or CSV; ShareGPT, OpenAI "
        "Batch, Alpaca or prompt rows) and show its detected format, counts, the first rows "
        "as they will be sent, and every invalid row with file and line; nothing is sent. "
        "Given a run config instead, read its input with its [run] format and columns and "
        "show the first model's request bodies. Exit 0 when valid, 2 otherwise.",
    )
    validate.add_argument("prompts", help="prompt file, or a run config (TOML/YAML)")
    validate.add_argument("--format", choices=FORMATS, help="skip detection (as [run] format)")
    validate.add_argument(
        "--columns",
        metavar="FIELD=COLUMN,...",
        help="map columns to prompt fields, e.g. prompt=question,expected=answer "
        "(as [run] columns)",
    )
    validate.add_argument(
        "--first-turn-only",
        action="store_true",
        help="ShareGPT: only the first human turn (as [run] first_turn_only)",
    )
    validate.add_argument(
        "--show", type=_count, default=3, metavar="N", help="rows to show as sent (default: 3)"
    )
    validate.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    from llamabatch.config.inputs import local_input
    from llamabatch.prompts import PromptSet

    given = local_input(args.prompts, "prompt file")  # s3://...: one line, not "not found"
    config = _config(given)
    path = config.input if config is not None else given
    prompts = PromptSet(path, layout=_layout(args, config))
    counts = _Counts(args.show)
    check = None
    if config is not None:
        from llamabatch.runs.rowcheck import RowCheck

        check = RowCheck(config)  # each row against the config's models, as a run checks it
    report = prompts.scan(counts, check, max_errors=None)
    if not report.rows:  # as `run` refuses it
        raise UsageError(f"{path}: the prompt file is empty; there is nothing to send")
    print(report.describe())
    status = "all valid" if not report.error_count else f"{report.error_count:,} invalid"
    print(
        f"{report.valid:,} valid of {report.rows:,} ({status}); {counts.expected:,} with an "
        f"expected answer, {counts.params:,} with their own params, {counts.turns:,} "
        f"multi-turn; the longest has {counts.most_messages} message"
        + ("s" if counts.most_messages != 1 else "")
    )
    model = _chat_model(config)
    if counts.first:
        where = f" to {model.name} ({model.provider})" if model is not None else ""
        shown = "row as it" if len(counts.first) == 1 else f"{len(counts.first)} rows as they"
        print(f"\nthe first {shown} will be sent{where}:")
        for prompt in counts.first:
            print(
                f"\n# {prompt.id}"
                + (f"  expected: {_cut(prompt.expected)!r}" if prompt.expected else "")
            )
            print(_request_body(prompt, config, model))
    if report.errors:
        print(f"{report.error_count:,} problem(s):", file=sys.stderr)
        for message in report.errors:
            print(message, file=sys.stderr)
    return 0 if not report.error_count else EXIT_USAGE


def _count(text: str) -> int:
    """--show: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


class _Counts:
    """A scan visitor: what the valid prompts hold, and the first few of them."""

    def __init__(self, show: int) -> None:
        self.show = show
        self.first: list[Prompt] = []
        self.expected = self.params = self.turns = self.most_messages = 0

    def __call__(self, row_no: int, prompt: Prompt) -> None:
        if len(self.first) < self.show:
            self.first.append(prompt)
        self.expected += prompt.expected is not None
        self.params += bool(prompt.params)
        self.turns += prompt.turns is not None
        self.most_messages = max(self.most_messages, len(prompt.messages))


def _config(path: Path) -> RunConfig | None:
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        return None
    from llamabatch.config import load_config

    return load_config(path)


def _layout(args: argparse.Namespace, config: RunConfig | None) -> Layout:
    from llamabatch.prompts import Layout

    base = Layout.of(config) if config is not None else Layout()
    columns = dict(base.columns)
    if args.columns:
        for pair in args.columns.split(","):
            field, sep, column = pair.partition("=")
            if not sep or not field.strip() or not column.strip():
                raise UsageError(f"--columns: expected FIELD=COLUMN pairs, got {pair!r}")
            columns[field.strip()] = column.strip()
    return Layout(
        format=args.format or base.format,
        columns=columns,
        first_turn_only=args.first_turn_only or base.first_turn_only,
    )


def _chat_model(config: RunConfig | None) -> ModelConfig | None:
    if config is None:
        return None
    return next((m for m in config.models if m.task == "chat"), None)


def _request_body(prompt: Prompt, config: RunConfig | None, model: ModelConfig | None) -> str:
    """The JSON body the model's wire format builds for the prompt (its first turn), or the
    messages and params alone without a config."""
    import dataclasses

    import orjson

    if config is None or model is None:
        body: dict[str, Any] = {"messages": prompt.messages, **prompt.params}
    else:
        from llamabatch.requestspec import merge_params
        from llamabatch.wire.formats import provider_for

        params = merge_params(config.defaults, model.params, prompt.params)
        # The URL does not matter here; a simulator started in-process has none yet.
        placeholder = dataclasses.replace(model, base_url=model.base_url or "http://sim/v1")
        request = provider_for(model.provider).build_request(
            placeholder, prompt.messages, params, None
        )
        body = orjson.loads(request.body)
    return _layout_json(_shortened(body))


def _layout_json(body: dict[str, Any]) -> str:
    """A body as JSON, one top-level key a line and each message on a line of its own."""
    import orjson

    lines = []
    for key, value in body.items():
        name = orjson.dumps(key).decode()
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"    {orjson.dumps(v).decode()}" for v in value)
            lines.append(f"  {name}: [\n{items}\n  ]")
        else:
            lines.append(f"  {name}: {orjson.dumps(value).decode()}")
    return "{\n" + ",\n".join(lines) + "\n}"


def _shortened(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, dict):
        return {k: _shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shortened(v) for v in value]
    return value


def _cut(text: str) -> str:
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}... ({len(text):,} characters)"
