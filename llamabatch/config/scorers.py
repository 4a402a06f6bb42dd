"""Scorer specs: the `[[scorers]]` tables of a config, validated, as plain data.

The functions the specs name live in `llamabatch.scoring`; what a spec points
at outside llamabatch (a JSON schema file, a `module:function`) is checked here,
so a bad one is a config error before anything is sent.
"""

from __future__ import annotations

import difflib
import importlib
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from llamabatch.config.settings import Table
from llamabatch.errors import ConfigError

TYPES: Final = (
    "exact",
    "contains",
    "regex",
    "json",
    "numeric",
    "choice",
    "python",
    "judge",
    "similarity",
)
MODEL_SCORERS: Final = {"judge": "chat", "similarity": "embed"}  # type -> the task of its model
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_]+$")
_COMMON: Final = ("name", "type", "where", "reduce", "pass_threshold")
NORMALISE: Final = {"ignore_case": True, "ignore_whitespace": True, "ignore_punctuation": False}
DEFAULT_PASS_THRESHOLD: Final = 0.5
DEFAULT_JUDGE_SCALE: Final = 10.0
REDUCERS: Final = ("mean", "majority", "pass@k")  # see report.stats.reduce_samples


@dataclass(frozen=True, kw_only=True)
class ScorerSpec:
    """One validated `[[scorers]]` table."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    where: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    reduce: str = "mean"
    pass_threshold: float = DEFAULT_PASS_THRESHOLD


class _Table(Table):
    """One scorer table; errors read `<file>: scorers[i]: <key> ...`."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a table")
        super().__init__(data, where, sep=": ")

    def error(self, key: str, message: str) -> ConfigError:
        # A required key missing beside a near-miss of it: the typo is the news.
        typo = message.startswith("is required") and difflib.get_close_matches(
            key, [str(k) for k in self.data], n=1, cutoff=0.7
        )
        if typo:
            return ConfigError(f"{self.label}: unknown setting(s): {typo[0]} (did you mean {key}?)")
        return super().error(key, message)

    def finish(self) -> None:
        if self.data:
            raise ConfigError(f"{self.label}: unknown setting(s): {self.leftover()}")


def parse_scorers(raw: Any, source: Path | str) -> tuple[ScorerSpec, ...]:
    """Validate the `scorers` list of a config (None means no scorers)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: scorers must be a list of [[scorers]] tables")
    specs = tuple(_parse_one(item, f"{source}: scorers[{i}]") for i, item in enumerate(raw))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"{source}: two scorers are named {spec.name!r}; names must differ")
        seen.add(spec.name)
    return specs


def _parse_one(data: Any, where: str) -> ScorerSpec:
    table = _Table(data, where)
    name = table.get("name", str)
    if name is None or not _NAME_RE.match(name):
        raise table.error("name", f"is required: letters, digits and '_' (got {name!r})")
    table.label = f"{where} ({name})"
    kind = table.get("type", str)
    if kind not in TYPES:
        raise table.error("type", f"must be one of {', '.join(TYPES)}, got {kind!r}")
    where_filter = {
        str(k): tuple(v) if isinstance(v, list) else (v,)
        for k, v in table.get("where", Mapping, {}).items()
    }
    reduce = table.one_of("reduce", REDUCERS, "mean")
    threshold = table.get("pass_threshold", float, DEFAULT_PASS_THRESHOLD)
    options = _OPTIONS[kind](table)
    table.finish()
    spec = ScorerSpec(
        name=name,
        type=kind,
        options=options,
        where=where_filter,
        reduce=reduce,
        pass_threshold=threshold,
    )
    _check_targets(spec, table.label)
    return spec


def _normalise_options(table: _Table) -> dict[str, Any]:
    return {k: table.get(k, bool, default) for k, default in NORMALISE.items()}


def _exact_options(table: _Table) -> dict[str, Any]:
    return _normalise_options(table)


def _contains_options(table: _Table) -> dict[str, Any]:
    values = table.get("values", list)
    if values is not None and not all(isinstance(v, str) for v in values):
        raise table.error("values", "must be a list of strings")
    options = {"mode": table.one_of("mode", ("any", "all"), "any"), **_normalise_options(table)}
    if values is not None:
        options["values"] = values
    return options


def _regex_options(table: _Table) -> dict[str, Any]:
    pattern = table.get("pattern", str)
    if pattern is None:
        raise table.error("pattern", "is required")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise table.error("pattern", f"is not a valid regular expression: {exc}") from None
    mode = table.one_of("mode", ("match", "extract"), "match")
    return {"pattern": pattern, "mode": mode, **_normalise_options(table)}


def _json_options(table: _Table) -> dict[str, Any]:
    options: dict[str, Any] = {"extract": table.get("extract", bool, True)}
    schema = table.get("schema", (str, Mapping))
    if schema is not None:
        options["schema"] = schema if isinstance(schema, str) else dict(schema)
    return options


def _numeric_options(table: _Table) -> dict[str, Any]:
    tolerance = table.get("tolerance", float, 1e-6)
    rel = table.get("rel_tolerance", float, 0.0)
    if tolerance < 0 or rel < 0:
        raise table.error("tolerance", "and rel_tolerance must be >= 0")
    pick = table.one_of("pick", ("first", "last"), "last")
    return {"tolerance": tolerance, "rel_tolerance": rel, "pick": pick}


def _choice_options(table: _Table) -> dict[str, Any]:
    letters = table.get("choices", str, "ABCD")
    if not letters.isalpha():
        raise table.error("choices", f"must be letters, got {letters!r}")
    return {"choices": letters}


def _python_options(table: _Table) -> dict[str, Any]:
    function = table.get("function", str)
    if function is None or function.count(":") != 1:
        raise table.error("function", f"must be 'module:function', got {function!r}")
    return {"function": function}


def _judge_options(table: _Table) -> dict[str, Any]:
    model = table.get("model", str)
    rubric = table.get("rubric", str)
    if model is None:
        raise table.error("model", "is required: the name of one of the [[models]]")
    if not rubric:
        raise table.error("rubric", "is required: what a good answer is")
    scale = table.get("scale", float, DEFAULT_JUDGE_SCALE)
    if scale <= 0:
        raise table.error("scale", f"must be > 0, got {scale}")
    options: dict[str, Any] = {"model": model, "rubric": rubric, "scale": scale}
    params = table.get("params", Mapping)
    if params is not None:
        options["params"] = dict(params)
    system = table.get("system", str)
    if system is not None:
        options["system"] = system
    return options


def _similarity_options(table: _Table) -> dict[str, Any]:
    model = table.get("model", str)
    if model is None:
        raise table.error("model", 'is required: one of the [[models]], with task = "embed"')
    return {"model": model}


_OPTIONS: Final[Mapping[str, Callable[[_Table], dict[str, Any]]]] = {
    "exact": _exact_options,
    "contains": _contains_options,
    "regex": _regex_options,
    "json": _json_options,
    "numeric": _numeric_options,
    "choice": _choice_options,
    "python": _python_options,
    "judge": _judge_options,
    "similarity": _similarity_options,
}


def load_schema(schema: str | Mapping[str, Any], label: str) -> Any:
    """A `json` scorer's schema (inline, or the JSON file named), checked to be a valid schema."""
    import jsonschema  # only configs with a json scorer schema pay for the import

    loaded: Any = dict(schema) if not isinstance(schema, str) else None
    if isinstance(schema, str):
        try:
            loaded = json.loads(Path(schema).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{label}: schema file {schema}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{label}: schema file {schema} is not JSON: {exc}") from None
    try:
        jsonschema.validators.validator_for(loaded).check_schema(loaded)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{label}: schema is not a valid JSON schema: {exc.message}") from None
    return loaded


def _check_targets(spec: ScorerSpec, label: str) -> None:
    """Fail now on a schema or a function the spec names that cannot be used."""
    if spec.type == "json" and "schema" in spec.options:
        load_schema(spec.options["schema"], label)
    elif spec.type == "python":
        import_function(spec.options["function"], label)


def import_function(target: str, label: str) -> Callable[[Mapping[str, Any]], Any]:
    """Import `module:function`; the working directory is searched first, like `python -m`."""
    module_name, _, attr = target.partition(":")
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{label}: cannot import {module_name!r} ({exc})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"{label}: {module_name!r} has no function {attr!r}")
    return function  # type: ignore[no-any-return]


def specs_from_snapshot(snapshot: Mapping[str, Any]) -> tuple[ScorerSpec, ...]:
    """The scorers recorded in a manifest's config snapshot."""
    tables: Sequence[Mapping[str, Any]] = snapshot.get("scorers") or []
    flat = [
        {
            **t.get("options", {}),
            "name": t["name"],
            "type": t["type"],
            "where": t.get("where") or None,
            "reduce": t.get("reduce", "mean"),
            "pass_threshold": t.get("pass_threshold", DEFAULT_PASS_THRESHOLD),
        }
        for t in tables
    ]
    return parse_scorers(flat, "_manifest.json")
