"""Dataset formats: JSON arrays, ShareGPT, OpenAI Batch, Alpaca, column mapping, detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamabatch import PromptError, PromptSet
from llamabatch.config.inputs import INPUT_FORMATS, MAPPABLE
from llamabatch.prompts import Layout
from llamabatch.prompts import formats as fmt
from tests import formatfixtures as fx
from tests.helpers import write_jsonl


def test_config_knows_the_same_format_and_field_names() -> None:
    assert INPUT_FORMATS == fmt.FORMATS and MAPPABLE == fmt.MAPPABLE


def test_sharegpt_dump_is_detected_and_converted(tmp_path: Path) -> None:
    prompts = PromptSet(fx.write_sharegpt(tmp_path / "sharegpt.json"))
    report = prompts.scan()
    assert prompts.kind == "json-array" and report.format == "sharegpt"
    assert (
        report.describe()
        == f"{tmp_path}/sharegpt.json: ShareGPT format, 5 conversations (1 invalid)"
    )
    problem = "'conversations' must be a non-empty list of {from, value}"
    assert report.errors == [f"{tmp_path}/sharegpt.json: row 5: {problem}"]
    by_id = {p.id: p for p in prompts}
    assert list(by_id) == ["QWJhYvA_0", "i6IyJda_0", "A5AbcES_0", "hRPPgZT_11"]
    first = by_id["QWJhYvA_0"]
    # Up to the last human turn; the gpt reply after it is the expected answer.
    assert [m["role"] for m in first.messages] == ["user", "assistant", "user"]
    assert first.messages[2]["content"].startswith("Summarize the main ideas of Brendon")
    assert first.expected.startswith("Here are the main ideas of Brendon")
    assert by_id["A5AbcES_0"].messages == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "¿Qué hora es? 你好"},
    ]
    assert by_id["A5AbcES_0"].expected is None  # no reply after the last human turn
    assert [m["role"] for m in by_id["hRPPgZT_11"].messages] == ["assistant", "user"]
    assert "conversations" not in first.extra


def test_sharegpt_first_turn_only(tmp_path: Path) -> None:
    path = fx.write_sharegpt(tmp_path / "sharegpt.json")
    prompt_set = PromptSet(path, layout=Layout(first_turn_only=True))
    prompt_set.scan()  # skips the empty conversation
    prompts = {p.id: p for p in prompt_set}
    first = prompts["QWJhYvA_0"]
    assert first.messages == [
        {"role": "user", "content": fx.SHAREGPT[0]["conversations"][0]["value"]}
    ]
    assert first.expected == fx.SHAREGPT[0]["conversations"][1]["value"]
    assert prompts["hRPPgZT_11"].messages == [
        {"role": "user", "content": "Thanks! Now write a haiku about it."}
    ]
    assert prompts["A5AbcES_0"].messages[0]["role"] == "system"


def test_sharegpt_jsonl_and_unknown_speakers(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "sg.jsonl",
        [
            {
                "conversations": [
                    {"from": "user", "value": "hi"},
                    {"from": "assistant", "value": "yo"},
                ]
            },
            {"conversations": [{"from": "narrator", "value": "once"}]},
            {"conversations": [{"from": "gpt", "value": "only me"}]},
            {"system": "Be brief.", "conversations": [{"from": "human", "value": " "}]},
        ],
    )
    prompts = PromptSet(path)
    report = prompts.scan()
    assert report.format == "sharegpt" and report.valid == 1
    assert report.errors == [
        f"{path}:2: conversations[0].from is 'narrator'; expected human, gpt or system",
        f"{path}:3: the conversation has no human turn",
        f"{path}:4: conversations[0] is empty (the human turn to send)",
    ]
    (prompt,) = list(prompts)
    assert prompt.messages == [{"role": "user", "content": "hi"}] and prompt.expected == "yo"


def test_sharegpt_in_parquet(tmp_path: Path) -> None:
    """Hugging Face's Parquet exports hold conversations as lists of structs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(fx.SHAREGPT[:2]), path)
    prompts = PromptSet(path)
    assert prompts.scan().describe() == f"{path}: ShareGPT format, 2 conversations"
    assert [len(p.messages) for p in prompts] == [3, 1]


def test_openai_batch_file_from_the_docs(tmp_path: Path) -> None:
    prompts = PromptSet(fx.write_openai_batch(tmp_path / "batchinput.jsonl"))
    report = prompts.scan()
    assert report.format == "openai-batch" and report.valid == 2
    assert report.dropped == {"model": 2}
    assert report.describe() == (
        f"{tmp_path}/batchinput.jsonl: OpenAI Batch format, 2 requests; dropped from the bodies "
        "(the config decides them): model (2)"
    )
    first, second = prompts
    assert (first.id, second.id) == ("request-1", "request-2")
    assert first.messages == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello world!"},
    ]
    assert first.params == {"max_tokens": 1000} and first.extra == {}


def test_openai_batch_drops_stream_settings_and_refuses_other_endpoints(tmp_path: Path) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}], "temperature": 0.2}
    rows = [
        {
            "custom_id": "s",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**body, "stream": True, "stream_options": {"include_usage": True}},
        },
        {
            "custom_id": "e",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "m", "input": "x"},
        },
        {"custom_id": "g", "method": "GET", "url": "/v1/chat/completions", "body": body},
        # n = 1 is one sample, what is sent anyway; more is what [run] repeats are for.
        {
            "custom_id": "n1",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**body, "n": 1},
        },
        {
            "custom_id": "n3",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**body, "n": 3},
        },
    ]
    prompts = PromptSet(write_jsonl(tmp_path / "b.jsonl", rows))
    report = prompts.scan()
    assert report.dropped == {"model": 3, "stream": 1, "stream_options": 1, "n": 1}
    messages = [e.split(": ", 1)[1] for e in report.errors]
    assert messages[:2] == [
        "url '/v1/embeddings' is not a chat completions request (/v1/chat/completions)",
        "method is 'GET'; a chat request is a POST",
    ]
    assert len(messages) == 3 and "params.n" in messages[2] and "repeats" in messages[2]
    assert [p.params for p in prompts] == [{"temperature": 0.2}, {"temperature": 0.2}]


def test_alpaca_json_array(tmp_path: Path) -> None:
    prompts = PromptSet(fx.write_alpaca(tmp_path / "alpaca_data.json"))
    assert prompts.scan().describe().endswith("alpaca_data.json: Alpaca format, 3 instructions")
    tips, odd, _ = prompts
    assert tips.messages == [{"role": "user", "content": "Give three tips for staying healthy."}]
    assert odd.messages[0]["content"] == "Identify the odd one out.\n\nTwitter, Instagram, Telegram"
    assert odd.expected == "Telegram" and odd.extra == {}


def test_csv_with_a_column_mapping(tmp_path: Path) -> None:
    path = fx.write_hf_csv(tmp_path / "gsm8k.csv")
    layout = Layout(columns={"prompt": "question", "expected": "answer"})
    prompts = PromptSet(path, layout=layout)
    report = prompts.scan()
    assert report.valid == 3 and report.format == "rows"
    first = next(iter(prompts))
    assert first.messages == [{"role": "user", "content": fx.GSM8K[0]["question"]}]
    assert first.expected == fx.GSM8K[0]["answer"] and first.expected.endswith("\n#### 72")
    assert first.extra == {}


def test_parquet_with_a_mapped_id(tmp_path: Path) -> None:
    path = fx.write_hf_parquet(tmp_path / "train-00000-of-00001.parquet")
    layout = Layout(columns={"prompt": "question", "expected": "answer", "id": "qid"})
    assert [p.id for p in PromptSet(path, layout=layout)] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]


def test_hugging_face_json_is_json_lines(tmp_path: Path) -> None:
    prompts = PromptSet(
        fx.write_hf_json(tmp_path / "test.json"), layout=Layout(columns={"prompt": "question"})
    )
    assert prompts.kind == "jsonl" and prompts.scan().valid == 3
    assert next(iter(prompts)).extra == {"answer": fx.GSM8K[0]["answer"]}


def test_nothing_fits_names_the_columns_and_the_mapping(tmp_path: Path) -> None:
    path = fx.write_hf_csv(tmp_path / "gsm8k.csv")
    with pytest.raises(PromptError) as info:
        PromptSet(path).scan()
    message = str(info.value)
    assert message.startswith(f"{path}: row 1 matches no known format (columns: question, answer)")
    assert 'columns = { prompt = "question", expected = "answer" }' in message
    assert "\n" not in message


def test_a_mapping_to_a_missing_column_is_a_row_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "a"}, {"q": "b"}])
    report = PromptSet(path, layout=Layout(columns={"prompt": "question"})).scan()
    assert report.errors == [f"{path}:2: has no column 'question' (run.columns.prompt)"]


def test_format_override_wins_over_detection(tmp_path: Path) -> None:
    # An Alpaca-shaped file read as prompt rows: `input` is then the text sent.
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Say hi.", "input": "Bob"}])
    assert next(iter(PromptSet(path))).messages[0]["content"] == "Say hi.\n\nBob"
    forced = PromptSet(path, layout=Layout(format="rows"))
    assert next(iter(forced)).messages == [{"role": "user", "content": "Bob"}]
    assert forced.scan().format == "rows"


def test_an_override_that_does_not_fit_is_one_error(tmp_path: Path) -> None:
    path = fx.write_alpaca(tmp_path / "alpaca.json")
    with pytest.raises(
        PromptError, match=r"row 1 is not ShareGPT format \(columns: instruction, input, output\)"
    ):
        PromptSet(path, layout=Layout(format="sharegpt")).scan()
    with pytest.raises(PromptError, match="first_turn_only applies to ShareGPT"):
        PromptSet(path, layout=Layout(first_turn_only=True)).scan()


def test_ndjson_and_broken_json_files(tmp_path: Path) -> None:
    nd = write_jsonl(tmp_path / "p.ndjson", [{"prompt": "x"}])
    assert PromptSet(nd).scan().valid == 1
    pretty = tmp_path / "one.json"
    pretty.write_text(json.dumps({"prompt": "x"}, indent=2))
    with pytest.raises(PromptError, match="neither a JSON array nor JSON lines"):
        PromptSet(pretty).scan()
    cut = tmp_path / "cut.json"
    cut.write_text('[{"prompt": "a"}, {"prompt": "b"}, {"pro')
    with pytest.raises(PromptError, match="invalid JSON in row 3: "):
        PromptSet(cut).scan()
    nan = tmp_path / "nan.json"
    nan.write_text('[{"prompt": NaN}]')
    with pytest.raises(PromptError) as info:
        PromptSet(nan).scan()
    assert (
        str(info.value)
        == f"{nan}: invalid JSON in row 1: lexical error: invalid char in json text."
    )
    for name, text in (("bom.json", '[{"prompt": "a"}]'), ("bom.jsonl", '{"prompt": "a"}\n')):
        bom = tmp_path / name
        bom.write_text(text, encoding="utf-8-sig")  # as Windows tools write UTF-8
        assert PromptSet(bom).scan().valid == 1
    mixed = tmp_path / "mixed.json"
    mixed.write_text('[{"prompt": "a"}, 3]')
    assert PromptSet(mixed).scan().errors == [f"{mixed}: row 2: expected a JSON object, got int"]
    with pytest.raises(
        PromptError, match=r"use \.jsonl \(or \.ndjson\), \.json, \.parquet or \.csv"
    ):
        PromptSet(tmp_path / "p.txt")


def test_a_json_array_is_read_item_by_item(tmp_path: Path) -> None:
    """Memory stays flat: items come from an incremental parser, not one big list."""
    path = tmp_path / "big.json"
    with path.open("w") as fh:
        fh.write("[")
        fh.write(
            ",".join(json.dumps({"prompt": f"question {i} " + "x" * 200}) for i in range(20_000))
        )
        fh.write("]")
    import tracemalloc

    prompts = PromptSet(path)
    tracemalloc.start()
    report = prompts.scan()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.valid == 20_000
    assert peak < path.stat().st_size / 4, (peak, path.stat().st_size)


def test_layout_from_a_config_and_its_snapshot() -> None:
    from llamabatch import config_from_dict

    config = config_from_dict(
        {
            "run": {"input": "x.csv", "format": "rows", "columns": {"prompt": "question"}},
            "models": [{"name": "m", "provider": "sim"}],
        }
    )
    layout = Layout.of(config)
    assert layout == Layout(format="rows", columns={"prompt": "question"})
    assert Layout.of(config.snapshot()) == layout and hash(Layout.of(config.snapshot())) == hash(
        layout
    )
    assert Layout().key() != layout.key()
