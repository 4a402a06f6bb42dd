"""`llamabatch validate`: detected format, counts, the first rows as sent, every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamabatch.cli.commands import main
from tests import formatfixtures as fx
from tests.helpers import write_jsonl


def test_sharegpt_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fx.write_sharegpt(tmp_path / "sharegpt.json")
    assert main(["validate", str(path), "--show", "2"]) == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"{path}: ShareGPT format, 5 conversations (1 invalid)"
    assert lines[1].startswith("4 valid of 5 (1 invalid); 3 with an expected answer")
    assert "the first 2 rows as they will be sent:" in out
    assert "# QWJhYvA_0  expected: " in out and "# i6IyJda_0" in out and "A5AbcES_0" not in out
    assert '    {"role":"assistant","content":"Here are the main ideas of Jeff' in out
    assert err.splitlines() == [
        "1 problem(s):",
        f"{path}: row 5: 'conversations' must be a non-empty list of {{from, value}}",
    ]


def test_every_problem_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}] + [{"x": i} for i in range(30)])
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "30 problem(s):" and len(err) == 31
    assert err[-1].startswith(f"{path}:31: needs 'messages'")


def test_a_config_shows_its_first_models_request_bodies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fx.write_openai_batch(tmp_path / "batchinput.jsonl")
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\ninput = "{path}"\n[defaults]\ntemperature = 0.2\n'
        '[[models]]\nname = "scout"\nprovider = "sim"\nmodel = "Llama-4-Scout"\n'
    )
    assert main(["validate", str(config), "--show", "1"]) == 0
    out = capsys.readouterr().out
    dropped = "dropped from the bodies (the config decides them): model (2)"
    assert f"OpenAI Batch format, 2 requests; {dropped}" in out
    assert "the first row as it will be sent to scout (sim):" in out
    body = json.loads(out[out.index("{") :])
    assert body["model"] == "Llama-4-Scout" and body["max_tokens"] == 1000
    assert body["temperature"] == 0.2 and body["stream"] is True
    assert body["messages"][1] == {"role": "user", "content": "Hello world!"}


def test_mapping_and_format_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fx.write_hf_csv(tmp_path / "gsm8k.csv")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert 'columns = { prompt = "question", expected = "answer" }' in err
    assert main(["validate", str(path), "--columns", "prompt=question,expected=answer"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: prompt rows, 3 prompts\n3 valid of 3 (all valid); 3 with")
    assert "clips" in out and "#### 72" in out
    alpaca = fx.write_alpaca(tmp_path / "alpaca.json")
    assert main(["validate", str(alpaca), "--format", "sharegpt"]) == 2
    assert "row 1 is not ShareGPT format" in capsys.readouterr().err
    assert main(["validate", str(path), "--columns", "prompt"]) == 2
    assert "--columns: expected FIELD=COLUMN pairs" in capsys.readouterr().err


def test_long_texts_are_cut_in_what_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "y" * 5000}])
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "... (5,000 characters)" in out and "y" * 401 not in out


def test_a_config_checks_rows_against_its_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {
            "id": "a",
            "messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}],
        },
        {"id": "b", "prompt": "y", "params": {"max_tokens": 9000}},
        {"id": "c", "prompt": "y", "params": {"extra_body": {"top_a": 0.1}}},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\ninput = "{path}"\n[defaults]\nextra_body = {{ cache_prompt = true }}\n'
        '[[models]]\nname = "native"\nprovider = "llama"\nbase_url = "http://h/v1"\n'
        "context_tokens = 8192\n"
    )
    assert main(["validate", str(path)]) == 0  # every format together takes these rows
    capsys.readouterr()
    assert main(["validate", str(config), "--show", "3"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "2 problem(s):",
        f"{path}:1: messages[0].role 'developer' is not a role of the llama wire format; "
        "use assistant, ipython, system, tool, user (for llama model native)",
        f"{path}:2: params.max_tokens = 9000 exceeds the 8192-token context window of native; "
        "lower it to at most 8192 (model native)",
    ]
    body = json.loads(out[out.index("{") :])
    assert body["cache_prompt"] is True and body["top_a"] == 0.1 and "extra_body" not in body


def test_an_empty_prompt_file_is_refused_as_run_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"llamabatch: error: {path}: the prompt file is empty; there is nothing to send"
    ]


@pytest.mark.parametrize("bad", ["-1", "x"])
def test_show_takes_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}])
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path), "--show", bad])
    assert info.value.code == 2
    assert f"--show: expected a whole number >= 0, got {bad!r}" in capsys.readouterr().err
