"""Multi-turn prompt rows: `turns`, their system message, and one expected answer per turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamabatch.prompts import PromptSet
from llamabatch.prompts.prompt import RowError, parse_row
from tests.helpers import ROOT, write_jsonl


def test_turns_are_user_messages_answered_in_order() -> None:
    prompt = parse_row({"id": "c", "system": "Be brief.", "turns": ["Hi", "And then?"]})
    assert prompt.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert prompt.turns is not None
    assert [t.message for t in prompt.turns] == [
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": "And then?"},
    ]


def test_a_leading_system_turn_and_message_objects() -> None:
    prompt = parse_row(
        {
            "turns": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "one"},
                {"role": "user", "content": "two", "name": None},
            ]
        }
    )
    assert prompt.messages[0] == {"role": "system", "content": "S"}
    assert prompt.turns is not None and prompt.turns[1].message == {
        "role": "user",
        "content": "two",
    }


def test_expected_per_turn_or_for_the_last_turn() -> None:
    listed = parse_row({"turns": ["a", "b"], "expected": ["1", 2]})
    assert [listed.expected_for(t) for t in (1, 2)] == ["1", "2"]
    assert listed.expected == "2"
    last = parse_row({"turns": ["a", "b"], "expected": "B"})
    assert [last.expected_for(t) for t in (1, 2)] == [None, "B"]
    single = parse_row({"prompt": "p", "expected": "x"})
    assert single.turns is None and single.expected_for(None) == "x"


def test_the_content_hash_covers_every_turn() -> None:
    a = parse_row({"id": "c", "turns": ["a", "b"]})
    b = parse_row({"id": "c", "turns": ["a", "c"]})
    assert a.content_hash != b.content_hash
    # A changed expected answer is not a changed prompt (as for single prompts).
    assert (
        a.content_hash == parse_row({"id": "c", "turns": ["a", "b"], "expected": "x"}).content_hash
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"turns": []}, "non-empty list"),
        ({"turns": "hi"}, "non-empty list"),
        ({"turns": ["a"], "prompt": "p"}, "exactly one"),
        ({"turns": [{"role": "assistant", "content": "x"}]}, r"turns\[0\] must be"),
        ({"turns": ["a", ""]}, r"turns\[1\].content"),
        ({"turns": ["a", "b"], "expected": ["1"]}, "1 answers for 2 turns"),
        ({"turns": [{"role": "system", "content": "s"}]}, "no user message"),
        ({"turns": ["a"], "system": 3}, "'system' must be a string"),
    ],
)
def test_bad_turns_are_row_errors(row: dict[str, Any], message: str) -> None:
    with pytest.raises(RowError, match=message):
        parse_row(row)


def test_the_shipped_multiturn_dataset_is_valid() -> None:
    prompts = PromptSet(ROOT / "datasets/multiturn.jsonl")
    report = prompts.scan()
    assert report.error_count == 0 and report.valid == 20
    rows = list(prompts)
    assert all(p.turns is not None and len(p.turns) == 2 for p in rows)
    assert all(t.expected is not None for p in rows for t in p.turns or [])
    assert "turns" not in report.extra_types and "category" in report.extra_types


def test_csv_turns_are_json_text(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('id,turns\nc,"[""a"", ""b""]"\n')
    (prompt,) = list(PromptSet(path))
    assert prompt.turns is not None and len(prompt.turns) == 2


def test_validate_reports_the_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "c", "turns": ["a", 5]}])
    report = PromptSet(path).scan()
    assert report.errors == [
        f"{path}:1: turns[1] must be a string or a {{role: user, content}} object"
    ]
