"""Which dataset format a prompt file is in, and the pipeline that makes prompt rows of it.

A record goes through three steps: the `columns` mapping renames the file's
columns to prompt-row fields; CSV cells holding JSON are decoded; the
format's converter (see converters.py) makes a prompt row of it. The format
is `[run] format` when given, else detected from the first record.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from llamabatch.errors import PromptError
from llamabatch.prompts import converters
from llamabatch.prompts.prompt import RowError, Undecodable

FORMATS: Final = ("sharegpt", "openai-batch", "alpaca", "rows")  # [run] format (fixed names)
# Prompt-row fields a [run] columns mapping may name (`columns = { prompt = "question" }`).
MAPPABLE: Final = ("id", "prompt", "system", "messages", "turns", "params", "expected", "text")
_ASKED: Final = ("prompt", "messages", "turns", "text")  # what a row needs one of
# How the one-line announcement names a format and what its rows are.
LABELS: Final = {
    "sharegpt": ("ShareGPT format", "conversation"),
    "openai-batch": ("OpenAI Batch format", "request"),
    "alpaca": ("Alpaca format", "instruction"),
    "rows": ("prompt rows", "prompt"),
}
DETECT_ROWS: Final = 100  # records looked at for one that can be decoded
_CSV_JSON: Final = ("messages", "turns", "params", "conversations", "body")
# Usual column names, for the mapping an error suggests.
_GUESSES: Final = {
    "prompt": ("question", "query", "problem", "instruction", "input", "content", "request"),
    "expected": ("answer", "output", "response", "target", "label", "solution", "completion"),
    "id": ("qid", "question_id", "uid", "idx", "task_id", "sample_id", "_id"),
}


@dataclass(frozen=True, kw_only=True)
class Layout:
    """How to read a file's records as prompts: its format (None: detect) and column mapping."""

    format: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)  # prompt-row field -> file column
    first_turn_only: bool = False  # ShareGPT: only the first human turn (and its reply)

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise PromptError(f"unknown format {self.format!r}; one of {', '.join(FORMATS)}")
        unknown = sorted(set(self.columns) - set(MAPPABLE))
        if unknown:
            raise PromptError(
                f"columns: cannot map {', '.join(unknown)}; fields are {', '.join(MAPPABLE)}"
            )

    @classmethod
    def of(cls, settings: Any) -> Layout:
        """The layout a run config (or its manifest snapshot, a dict) describes."""
        get = settings.get if isinstance(settings, Mapping) else _attr(settings)
        return cls(
            format=get("format", None),
            columns=dict(get("columns", None) or {}),
            first_turn_only=bool(get("first_turn_only", False)),
        )

    def __hash__(self) -> int:
        return hash(self.key())

    def key(self) -> bytes:
        """What makes two layouts read a file alike (part of the scan cache's digest)."""
        return orjson.dumps(
            [self.format, dict(self.columns), self.first_turn_only], option=orjson.OPT_SORT_KEYS
        )


def _attr(obj: Any) -> Callable[[str, Any], Any]:
    return lambda name, default: getattr(obj, name, default)


def detect(row: Mapping[str, Any]) -> str | None:
    """The format a (mapped) record is in, or None when nothing fits."""
    if fits("sharegpt", row):
        return "sharegpt"
    if "custom_id" in row and fits("openai-batch", row):
        return "openai-batch"
    if not _asks(row) and "instruction" in row and ("output" in row or "input" in row):
        return "alpaca"
    return "rows" if fits("rows", row) else None


def fits(fmt: str, row: Mapping[str, Any]) -> bool:
    """Whether a record has what a format needs (its rows may still be invalid)."""
    if fmt == "sharegpt":
        return isinstance(row.get("conversations"), list)
    if fmt == "openai-batch":
        return isinstance(row.get("body"), dict)
    if fmt == "alpaca":
        return "instruction" in row
    return _asks(row) or isinstance(row.get("input"), str)


def _asks(row: Mapping[str, Any]) -> bool:
    return any(row.get(k) is not None for k in _ASKED)


class Pipeline:
    """Records of one file -> prompt rows: mapping, CSV decoding, the format's conversion."""

    def __init__(self, path: Path, kind: str, layout: Layout, first: Iterator[Any]) -> None:
        self.path = path
        self.layout = layout
        self.csv = kind == "csv"
        self.dropped: Counter[str] = Counter()  # OpenAI Batch body keys dropped, by key
        self.format = self._decide(first)
        if layout.first_turn_only and self.format != "sharegpt":
            raise PromptError(
                f"{path}: run.first_turn_only applies to ShareGPT conversations; "
                f"this file is {LABELS[self.format][0]}"
            )
        self._convert = converters.converter(
            self.format, first_turn_only=layout.first_turn_only, dropped=self.dropped
        )
        # Prompt rows as they are: records pass untouched (a resume's hot path).
        self.identity = self.format == "rows" and not layout.columns and not self.csv

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        """The prompt row of a record; a record it cannot convert carries its error."""
        if isinstance(record, Undecodable):
            return record
        try:
            return self._convert(self._mapped(record))
        except RowError as exc:
            return Undecodable(str(exc))

    def _mapped(self, record: dict[str, Any]) -> dict[str, Any]:
        row = dict(record)
        for target, source in self.layout.columns.items():
            if source == target:
                continue
            if source not in row:
                if target in _ASKED:
                    raise RowError(f"has no column {source!r} (run.columns.{target})")
                continue
            if target in row:
                raise RowError(
                    f"has a {target!r} column and {source!r} mapped to it (run.columns); rename one"
                )
            row[target] = row.pop(source)
        if self.csv:
            for key in _CSV_JSON:
                value = row.get(key)
                if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
                    with contextlib.suppress(orjson.JSONDecodeError):
                        row[key] = orjson.loads(value)
        return row

    def _decide(self, first: Iterator[Any]) -> str:
        """The configured format, else the first decodable record's; check that it fits."""
        for row_no, record in first:
            if isinstance(record, Undecodable) or record is None:
                continue
            try:
                row = self._mapped(record)
            except RowError:
                row = dict(record)
            fmt = self.layout.format or detect(row)
            if fmt is None or not fits(fmt, row):
                raise PromptError(self._no_fit(row_no, record, fmt))
            return fmt
        return self.layout.format or "rows"  # nothing decodable: every row reports its error

    def _no_fit(self, row_no: int, record: Mapping[str, Any], fmt: str | None) -> str:
        names = list(record)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        what = f"is not {LABELS[fmt][0]}" if fmt else "matches no known format"
        return (
            f"{self.path}: row {row_no} {what} (columns: {shown or 'none'}); map yours under "
            f"[run], e.g. columns = {{ {suggest_mapping(names)} }}, or set run.format to one of "
            f"{', '.join(FORMATS)}"
        )


def suggest_mapping(names: list[str]) -> str:
    """A `columns` mapping for these column names, by the names datasets usually use."""
    lowered = {n.lower(): n for n in names}
    picked: dict[str, str] = {}
    for target, usual in _GUESSES.items():
        for guess in usual:
            if guess in lowered and lowered[guess] not in picked.values():
                picked[target] = lowered[guess]
                break
    if "prompt" not in picked:
        picked["prompt"] = next((n for n in names if n not in picked.values()), "<column>")
    return ", ".join(f'{k} = "{v}"' for k, v in picked.items())


def describe(path: Path, fmt: str, rows: int, invalid: int, dropped: Mapping[str, int]) -> str:
    """The one line announcing what a prompt file is: `x.json: ShareGPT format, 1,203
    conversations`, plus what is invalid and what was dropped."""
    label, noun = LABELS[fmt]
    line = f"{path}: {label}, {rows:,} {noun}{'s' if rows != 1 else ''}"
    if invalid:
        line += f" ({invalid:,} invalid)"
    if dropped:
        keys = ", ".join(f"{k} ({n:,})" for k, n in dropped.items())
        line += f"; dropped from the bodies (the config decides them): {keys}"
    return line
