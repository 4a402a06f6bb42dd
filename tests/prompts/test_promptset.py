from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llamabatch import PromptError, PromptSet
from tests.helpers import write_jsonl


def test_prompt_and_system_become_messages(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "hi", "system": "be nice"}])
    (prompt,) = list(PromptSet(path))
    assert prompt.messages == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
    ]


def test_params_expected_and_extra_columns(tmp_path: Path) -> None:
    row = {"id": "a", "prompt": "hi", "params": {"max_tokens": 9}, "expected": 42, "tag": "x"}
    (prompt,) = list(PromptSet(write_jsonl(tmp_path / "p.jsonl", [row])))
    assert prompt.params == {"max_tokens": 9} and prompt.expected == "42"
    assert prompt.extra == {"tag": "x"}


def test_derived_id_depends_on_content_not_position(tmp_path: Path) -> None:
    rows = [{"prompt": "one"}, {"prompt": "two"}]
    first = [p.id for p in PromptSet(write_jsonl(tmp_path / "a.jsonl", rows))]
    second = [p.id for p in PromptSet(write_jsonl(tmp_path / "b.jsonl", rows[::-1]))]
    assert first == second[::-1] and first[0] != first[1]
    same = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "one"}]}])
    assert next(iter(PromptSet(same))).id == first[0]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"id": "x"}), "needs 'messages'"),
        (json.dumps({"prompt": "a", "messages": []}), "both 'messages' and 'prompt'"),
        (json.dumps({"messages": [{"content": "a"}]}), r"messages\[0\]\.role"),
        (json.dumps({"messages": "hi"}), "'messages' must be a non-empty list"),
        (json.dumps({"prompt": 3}), "'prompt' must be a non-empty string"),
        (json.dumps({"prompt": "a", "params": [1]}), "'params' must be an object"),
        (
            json.dumps({"prompt": "a", "params": {"max_tokens": "9"}}),
            "max_tokens must be an integer",
        ),
        (
            json.dumps({"prompt": "a", "params": {"temperature": "hot"}}),
            "temperature must be a number",
        ),
        (json.dumps({"prompt": "a", "id": ["x"]}), "'id' must be a non-empty string"),
    ],
)
def test_invalid_rows_name_file_line_and_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "ok", "prompt": "fine"}, line])
    report = PromptSet(path).scan()
    assert report.valid == 1 and report.error_count == 1
    assert report.errors[0].startswith(f"{path}:2: ")
    assert pytest.importorskip("re").search(reason, report.errors[0])
    with pytest.raises(PromptError, match=f"{path}:2: "):
        report.raise_if_invalid()


def test_duplicate_ids_are_reported_with_both_rows(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}]
    report = PromptSet(write_jsonl(tmp_path / "p.jsonl", rows)).scan()
    assert report.errors == [f"{tmp_path / 'p.jsonl'}:3: duplicate id 'a' (first seen at row 1)"]


def test_skipping_invalid_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}, "{bad", {"id": "b", "prompt": "y"}]
    )
    prompts = PromptSet(path)
    prompts.scan()
    assert [p.id for p in prompts] == ["a", "b"]


def test_limit(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"id": str(i), "prompt": "x" * (i + 1)} for i in range(10)]
    )
    prompts = PromptSet(path, limit=3)
    prompts.scan()
    assert [p.id for p in prompts] == ["0", "1", "2"] and prompts.count() == 3


def test_parquet_with_messages_and_typed_extras(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": ["a", "b"],
            "messages": [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]],
            "score": [1.5, 2.0],
            "n": [1, 2],
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    prompts = PromptSet(tmp_path / "p.parquet")
    report = prompts.scan()
    assert report.valid == 2 and report.extra_types == {"score": pa.float64(), "n": pa.int64()}
    assert [p.messages for p in prompts][1] == [{"role": "user", "content": "yo"}]


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["x", None]}), tmp_path / "p.parquet")
    report = PromptSet(tmp_path / "p.parquet").scan()
    assert report.errors[0].startswith(f"{tmp_path / 'p.parquet'}: row 2: needs 'messages'")


def test_csv_rows_and_json_cells(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(
        'id,prompt,params,topic\na,Hello,"{""max_tokens"": 5}",greet\nb,,,x\n'
    )
    report = PromptSet(tmp_path / "p.csv").scan()
    assert report.valid == 1
    assert report.errors[0].startswith(f"{tmp_path / 'p.csv'}: row 2 (line 3): needs")


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"unknown prompt file type '\.txt'"):
        PromptSet(tmp_path / "p.txt")
    with pytest.raises(PromptError, match="prompt file not found"):
        PromptSet(tmp_path / "p.jsonl")


_ITERATE = """
import resource, sys
from llamabatch import PromptSet
prompts = PromptSet(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = 0
for batch in prompts.batches(1000):
    count += len(batch)
    last = batch[-1].id
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, last, (peak - base) * 1024)
"""


@pytest.mark.slow
def test_200k_rows_stream_without_loading_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    filler = "lorem ipsum " * 20
    with path.open("w") as fh:
        for i in range(200_000):
            fh.write(json.dumps({"id": f"r{i}", "prompt": f"{filler} {i}", "tag": i % 7}) + "\n")
    size = path.stat().st_size
    out = subprocess.run(
        [sys.executable, "-c", _ITERATE, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    count, last, grown = int(out[0]), out[1], int(out[2])
    assert count == 200_000 and last == "r199999"
    # Iteration holds one batch at a time: memory grows by a small fraction of
    # the ~55 MB file (holding every prompt would take several times the file).
    assert grown < size / 4, (grown, size)


def _sent(prompts: PromptSet, only: bytearray | None = None) -> list[tuple[str, list[Any]]]:
    return [(p.id, p.messages) for batch in prompts.batches(3, only=only) for p in batch]


@pytest.mark.parametrize("limit", [None, 4])
def test_a_kept_scan_gives_what_reading_again_gives(tmp_path: Path, limit: int | None) -> None:
    rows: list[Any] = [{"id": f"p{i}", "prompt": f"q{i}"} for i in range(8)]
    rows[2] = "{broken"
    rows[5] = {"id": "p1", "prompt": "a duplicate id"}
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    only = bytearray([1, 1, 0, 1, 1, 1, 1, 0, 1])  # by line: lines 2 and 7 are finished
    kept, read = PromptSet(path, limit=limit), PromptSet(path, limit=limit)
    kept.scan(keep=True)
    read.scan()
    for mark in (None, only):
        assert _sent(kept, mark) == _sent(read, mark)
    assert "p1" in [i for i, _ in _sent(kept)] and len(_sent(kept)) == (limit or 6)


def test_a_kept_scan_is_not_read_again_a_large_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": "old"} for i in range(3)])
    small, large = PromptSet(path), PromptSet(path)
    small.scan(keep=True)
    monkeypatch.setattr("llamabatch.prompts.promptset.KEEP_ROWS", 2)
    large.scan(keep=True)
    write_jsonl(path, [{"id": f"p{i}", "prompt": "new"} for i in range(3)])
    assert {m[0]["content"] for _, m in _sent(small)} == {"old"}  # validated once, kept
    assert {m[0]["content"] for _, m in _sent(large)} == {"new"}  # read batch by batch
