"""Scorers: the `[[scorers]]` tables of a config, validated, and the functions they name.

Each scorer turns one result row into a number (0..1 for the built-in ones)
stored in `score_<name>`; a row that failed, lacks what the scorer needs, or
is outside its `where` filter scores None. The `judge` scorer calls a model
and lives in `judge.py`; here it is only validated.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from llamabatch import extract
from llamabatch.errors import ConfigError
from llamabatch.settings import Table

TYPES: Final = ("exact", "contains", "regex", "json", "numeric", "choice", "python", "judge")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_]+$")
_COMMON: Final = ("name", "type", "where", "reduce", "pass_threshold")
_NORMALISE: Final = {"ignore_case": True, "ignore_whitespace": True, "ignore_punctuation": False}
DEFAULT_PASS_THRESHOLD: Final = 0.5
DEFAULT_JUDGE_SCALE: Final = 10.0
REDUCERS: Final = ("mean", "majority", "pass@k")  # see stats.reduce_samples

Row = Mapping[str, Any]
Scorer = Callable[[Row], float | None]


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
    if kind != "judge":
        build_scorer(spec, where=table.label)  # fail now on a bad pattern, schema or import
    return spec


def _normalise_options(table: _Table) -> dict[str, Any]:
    return {k: table.get(k, bool, default) for k, default in _NORMALISE.items()}


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


_OPTIONS: Final[Mapping[str, Callable[[_Table], dict[str, Any]]]] = {
    "exact": _exact_options,
    "contains": _contains_options,
    "regex": _regex_options,
    "json": _json_options,
    "numeric": _numeric_options,
    "choice": _choice_options,
    "python": _python_options,
    "judge": _judge_options,
}


def build_scorer(spec: ScorerSpec, *, where: str | None = None) -> Scorer:
    """The row -> score function of a (non-judge) spec, with its `where` filter applied."""
    label = where or f"scorer {spec.name!r}"
    if spec.type == "judge":
        raise ValueError("judge scorers are run by llamabatch.judge")
    inner = _BUILDERS[spec.type](spec.options, label)
    if not spec.where:
        return _ok_only(inner)
    wanted = spec.where

    def filtered(row: Row) -> float | None:
        if any(row.get(col) not in values for col, values in wanted.items()):
            return None
        return inner(row)

    return _ok_only(filtered)


def _ok_only(inner: Scorer) -> Scorer:
    def score(row: Row) -> float | None:
        if row.get("status") != "ok" or row.get("output_text") is None:
            return None
        return inner(row)

    return score


def _norm(options: Mapping[str, Any]) -> Callable[[str], str]:
    flags = {k: options.get(k, v) for k, v in _NORMALISE.items()}
    return lambda text: extract.normalise(text, **flags)


def _exact(options: Mapping[str, Any], label: str) -> Scorer:
    norm = _norm(options)

    def score(row: Row) -> float | None:
        expected = row.get("expected")
        if expected is None:
            return None
        return float(norm(row["output_text"]) == norm(str(expected)))

    return score


def _contains(options: Mapping[str, Any], label: str) -> Scorer:
    norm = _norm(options)
    fixed = [norm(v) for v in options["values"]] if "values" in options else None
    combine = all if options["mode"] == "all" else any

    def score(row: Row) -> float | None:
        if fixed is not None:
            needles = fixed
        elif row.get("expected") is not None:
            needles = [norm(str(row["expected"]))]
        else:
            return None
        text = norm(row["output_text"])
        return float(combine(n in text for n in needles))

    return score


def _regex(options: Mapping[str, Any], label: str) -> Scorer:
    pattern = re.compile(options["pattern"])
    norm = _norm(options)
    extract_mode = options["mode"] == "extract"

    def score(row: Row) -> float | None:
        match = pattern.search(row["output_text"])
        if not extract_mode:
            return float(match is not None)
        if row.get("expected") is None:
            return None
        if match is None:
            return 0.0
        found = match.group(1) if pattern.groups else match.group(0)
        return float(norm(found or "") == norm(str(row["expected"])))

    return score


def _json(options: Mapping[str, Any], label: str) -> Scorer:
    import jsonschema  # only configs with a json scorer pay for the import

    validator = None
    if "schema" in options:
        schema = _load_schema(options["schema"], label)
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(
                f"{label}: schema is not a valid JSON schema: {exc.message}"
            ) from None
        validator = cls(schema)
    extract_json = bool(options["extract"])

    def score(row: Row) -> float | None:
        ok, value = extract.json_value(row["output_text"], extract=extract_json)
        if not ok:
            return 0.0
        return 1.0 if validator is None or validator.is_valid(value) else 0.0

    return score


def _load_schema(schema: str | Mapping[str, Any], label: str) -> Any:
    if not isinstance(schema, str):
        return dict(schema)
    try:
        return json.loads(Path(schema).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{label}: schema file {schema}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{label}: schema file {schema} is not JSON: {exc}") from None


def _numeric(options: Mapping[str, Any], label: str) -> Scorer:
    tol, rel, pick = options["tolerance"], options["rel_tolerance"], options["pick"]

    def score(row: Row) -> float | None:
        expected = row.get("expected")
        target = None if expected is None else extract.number(str(expected), "last")
        if target is None:
            return None
        got = extract.number(row["output_text"], pick)
        if got is None:
            return 0.0
        return float(abs(got - target) <= max(tol, rel * abs(target)))

    return score


def _choice(options: Mapping[str, Any], label: str) -> Scorer:
    letters = options["choices"]

    def score(row: Row) -> float | None:
        expected = row.get("expected")
        target = None if expected is None else extract.choice(str(expected), letters)
        if target is None:
            return None
        return float(extract.choice(row["output_text"], letters) == target)

    return score


def _python(options: Mapping[str, Any], label: str) -> Scorer:
    function = import_function(options["function"], label)

    def score(row: Row) -> float | None:
        value = function(row)
        return None if value is None else float(value)

    return score


def import_function(target: str, label: str) -> Callable[[Row], Any]:
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


_BUILDERS: Final[Mapping[str, Callable[[Mapping[str, Any], str], Scorer]]] = {
    "exact": _exact,
    "contains": _contains,
    "regex": _regex,
    "json": _json,
    "numeric": _numeric,
    "choice": _choice,
    "python": _python,
}
