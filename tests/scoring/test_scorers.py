"""Each scorer on rows, and the `[[scorers]]` validation that guards them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamabatch.config import ScorerSpec
from llamabatch.config.scorers import parse_scorers
from llamabatch.errors import ConfigError
from llamabatch.scoring.scorers import build_scorer


def scorer(table: dict[str, Any]) -> Any:
    (spec,) = parse_scorers([{"name": "s", **table}], "c.toml")
    return build_scorer(spec)


def row(output: str | None, expected: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"status": "ok", "output_text": output, "expected": expected, **extra}


def test_exact_normalises_case_and_whitespace_by_default() -> None:
    score = scorer({"type": "exact"})
    assert score(row("  paris\n", "Paris")) == 1.0
    assert score(row("Paris.", "Paris")) == 0.0
    assert scorer({"type": "exact", "ignore_punctuation": True})(row("Paris.", "Paris")) == 1.0
    assert scorer({"type": "exact", "ignore_case": False})(row("paris", "Paris")) == 0.0
    assert score(row("Paris")) is None  # nothing to compare with


def test_scorers_skip_failed_rows_and_rows_outside_where() -> None:
    score = scorer({"type": "exact", "where": {"category": ["qa", "math"]}})
    assert score({**row("x", "x"), "status": "error"}) is None
    assert score(row("x", "x", category="code")) is None
    assert score(row("x", "x", category="math")) == 1.0


def test_contains_any_all_and_expected() -> None:
    assert scorer({"type": "contains"})(row("The capital is Paris.", "paris")) == 1.0
    any_of = scorer({"type": "contains", "values": ["sorry", "cannot"]})
    assert any_of(row("I cannot help")) == 1.0 and any_of(row("Sure")) == 0.0
    all_of = scorer({"type": "contains", "values": ["a", "b"], "mode": "all"})
    assert all_of(row("a and b")) == 1.0 and all_of(row("a only")) == 0.0


def test_regex_match_and_extract() -> None:
    assert scorer({"type": "regex", "pattern": r"^\d{3}-\d{4}$"})(row("555-1234")) == 1.0
    assert scorer({"type": "regex", "pattern": r"^\d{3}-\d{4}$"})(row("call 555")) == 0.0
    extract = scorer({"type": "regex", "pattern": r"Final answer:\s*(\w+)", "mode": "extract"})
    assert extract(row("thinking... Final answer: Blue", "blue")) == 1.0
    assert extract(row("Final answer: red", "blue")) == 0.0
    assert extract(row("no answer", "blue")) == 0.0


def test_json_valid_and_schema(tmp_path: Path) -> None:
    valid = scorer({"type": "json"})
    assert valid(row('{"a": 1}')) == 1.0
    assert valid(row('Here you go:\n```json\n{"a": 1}\n```')) == 1.0
    assert valid(row("{not json")) == 0.0
    assert scorer({"type": "json", "extract": False})(row('text {"a": 1}')) == 0.0
    schema = {"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}}
    inline = scorer({"type": "json", "schema": schema})
    assert inline(row('{"age": 3}')) == 1.0 and inline(row('{"age": "3"}')) == 0.0
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    assert scorer({"type": "json", "schema": str(path)})(row('{"name": "x"}')) == 0.0


def test_numeric_with_tolerance() -> None:
    score = scorer({"type": "numeric"})
    assert score(row("17 + 25 = 42", "42")) == 1.0
    assert score(row("The total is 1,250.", "1250")) == 1.0
    assert score(row("about 41.9", "42")) == 0.0
    assert scorer({"type": "numeric", "tolerance": 0.2})(row("about 41.9", "42")) == 1.0
    assert scorer({"type": "numeric", "rel_tolerance": 0.01})(row("99.5", "100")) == 1.0
    assert scorer({"type": "numeric", "pick": "first"})(row("42, not 7", "42")) == 1.0
    assert score(row("no number", "42")) == 0.0
    assert score(row("42", "n/a")) is None


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("B", 1.0),
        ("(B) because of tides", 1.0),
        ("The answer is B.", 1.0),
        ("Answer: b", 0.0),  # lower case is not a choice letter
        ("I would say C", 0.0),
        ("A or B, hard to say", 0.0),
        ("unsure", 0.0),
    ],
)
def test_choice_extracts_the_letter(reply: str, score: float) -> None:
    assert scorer({"type": "choice"})(row(reply, "B")) == score


def test_python_scorer_gets_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_scorers.py").write_text(
        "def length_ok(row):\n    return len(row['output_text']) <= row['limit']\n"
    )
    monkeypatch.chdir(tmp_path)
    score = scorer({"type": "python", "function": "my_scorers:length_ok"})
    assert score(row("short", limit=10)) == 1.0 and score(row("much too long", limit=3)) == 0.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "exact", "ignore_case": "yes"}, "scorers[0] (s): ignore_case must be bool"),
        ({"type": "fuzzy"}, "type must be one of exact, contains"),
        ({"type": "regex", "pattern": "("}, "pattern is not a valid regular expression"),
        ({"type": "regex"}, "pattern is required"),
        ({"type": "json", "schema": {"type": 3}}, "schema is not a valid JSON schema"),
        ({"type": "python", "function": "nowhere_mod:f"}, "cannot import 'nowhere_mod'"),
        ({"type": "python", "function": "json:nope"}, "'json' has no function 'nope'"),
        ({"type": "exact", "reduce": "median"}, "reduce must be one of mean, majority, pass@k"),
        ({"type": "exact", "colour": 1}, "unknown setting(s): colour"),
        ({"type": "regex", "patern": "x"}, "unknown setting(s): patern (did you mean pattern?)"),
        ({"type": "judge", "model": "m"}, "rubric is required"),
    ],
)
def test_bad_scorer_tables_name_the_setting(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scorers([{"name": "s", **table}], "c.toml")
    assert message in str(info.value) and str(info.value).startswith("c.toml: ")


def test_duplicate_and_badly_named_scorers() -> None:
    with pytest.raises(ConfigError, match="two scorers are named 'a'"):
        parse_scorers([{"name": "a", "type": "exact"}, {"name": "a", "type": "json"}], "c.toml")
    with pytest.raises(ConfigError, match="name is required"):
        parse_scorers([{"name": "a b", "type": "exact"}], "c.toml")


def test_spec_defaults() -> None:
    (spec,) = parse_scorers([{"name": "a", "type": "exact"}], "c.toml")
    assert spec == ScorerSpec(
        name="a",
        type="exact",
        options={"ignore_case": True, "ignore_whitespace": True, "ignore_punctuation": False},
    )
