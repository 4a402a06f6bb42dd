"""Scorers: the functions `[[scorers]]` specs name, each turning a result row into a score.

Each scorer turns one result row into a number (0..1 for the built-in ones)
stored in `score_<name>`; a row that failed, lacks what the scorer needs, or
is outside its `where` filter scores None. Judge scorers call a model and are
run by `llamabatch.runs.judge`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from llamabatch.config.scorers import NORMALISE, ScorerSpec, import_function, load_schema
from llamabatch.scoring import extract

Row = Mapping[str, Any]
Scorer = Callable[[Row], float | None]


def build_scorer(spec: ScorerSpec, *, where: str | None = None) -> Scorer:
    """The row -> score function of a (non-judge) spec, with its `where` filter applied."""
    label = where or f"scorer {spec.name!r}"
    if spec.type == "judge":
        raise ValueError("judge scorers are run by llamabatch.runs.judge")
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
    flags = {k: options.get(k, v) for k, v in NORMALISE.items()}
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
    validator = None
    if "schema" in options:
        import jsonschema  # only configs with a json scorer schema pay for the import

        schema = load_schema(options["schema"], label)
        validator = jsonschema.validators.validator_for(schema)(schema)
    extract_json = bool(options["extract"])

    def score(row: Row) -> float | None:
        ok, value = extract.json_value(row["output_text"], extract=extract_json)
        if not ok:
            return 0.0
        return 1.0 if validator is None or validator.is_valid(value) else 0.0

    return score


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


_BUILDERS: Final[Mapping[str, Callable[[Mapping[str, Any], str], Scorer]]] = {
    "exact": _exact,
    "contains": _contains,
    "regex": _regex,
    "json": _json,
    "numeric": _numeric,
    "choice": _choice,
    "python": _python,
}
