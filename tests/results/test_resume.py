"""Resume: exact bookkeeping, repair after a crash, and refusing incomparable rows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from llamabatch import SimServer, UsageError, arun
from llamabatch.results import part_files, result_schema
from llamabatch.results.journal import JOURNAL_DIR, ResultWriter, recover
from llamabatch.results.resume import load_done
from tests.helpers import FAST, prompt_rows, sim_config, write_jsonl

pytestmark = pytest.mark.anyio


def row(model: str, prompt_id: str, status: str = "ok", finished: int = 1) -> dict[str, object]:
    base = dict.fromkeys(result_schema().names)
    base.update(
        run_id="r",
        model=model,
        provider="openai",
        model_id=model,
        prompt_id=prompt_id,
        sample=0,
        status=status,
        attempts=1,
        usage_source="server",
        queue_s=0.0,
        latency_s=0.1,
        started_at=0,
        finished_at=finished,
        request_params="{}",
    )
    return base


def test_journal_left_by_a_killed_run_becomes_a_part(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "run1")
    writer.open()
    writer.start(result_schema())
    for i in range(3):
        writer.write(row("m", f"p{i}"))
    segment = next((tmp_path / JOURNAL_DIR).glob("run1-*.jsonl"))
    with segment.open("ab") as fh:  # a write torn by SIGKILL
        fh.write(json.dumps(row("m", "p3"))[:40].encode())
    # The process dies here: no close(). A new run repairs the directory.
    assert recover(tmp_path) == 3
    df = pd.read_parquet(tmp_path)
    assert sorted(df["prompt_id"]) == ["p0", "p1", "p2"]
    assert not list((tmp_path / JOURNAL_DIR).glob("*.jsonl"))


def test_newest_row_per_key_wins(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "a")
    writer.open()
    writer.start(result_schema())
    writer.write(row("m", "p0", "error", finished=1))
    writer.write(row("m", "p1", "ok", finished=1))
    writer.close()
    writer = ResultWriter(tmp_path, "b")
    writer.open()
    writer.start(result_schema())
    writer.write(row("m", "p0", "ok", finished=2))
    writer.close()
    df = pd.read_parquet(tmp_path).sort_values("prompt_id")
    assert df[["prompt_id", "status"]].values.tolist() == [["p0", "ok"], ["p1", "ok"]]
    assert load_done(tmp_path).count() == 2


def test_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = ResultWriter(tmp_path, "a")
    first.open()
    with pytest.raises(UsageError, match="in use by llamabatch run"):
        ResultWriter(tmp_path, "b").open()
    first.start(result_schema())
    first.close()
    ResultWriter(tmp_path, "c").open()  # released


def test_done_index_lookups(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "a")
    writer.open()
    writer.start(result_schema())
    for i in range(50):
        writer.write(row("m", f"p{i}", "ok" if i % 5 else "error"))
    writer.close()
    done = load_done(tmp_path)
    assert done.count() == 40 and done.errors == 10
    assert done.is_done("m", "p1", 0) and not done.is_done("m", "p0", 0)
    assert not done.is_done("other", "p1", 0) and not done.is_done("m", "p1", 1)
    assert load_done(tmp_path, keep_errors=True).count() == 50


async def test_keep_errors_does_not_resend_failed_rows(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        sim.script.extend(["400", "ok", "ok"])
        config = sim_config(tmp_path, sim.base_url, n_prompts=3, engine={"concurrency": 1})
        await arun(config)
        again = await arun(config, keep_errors=True)
        assert again.ok == 0 and sim.stats.requests == 3
        retried = await arun(config)
        assert retried.ok == 1 and sim.stats.requests == 4


@pytest.mark.parametrize(
    "change",
    ["model id", "params", "prompt content", "stream"],
)
async def test_incomparable_changes_are_refused_unless_forced(tmp_path: Path, change: str) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=4)
        await arun(config)
        (model,) = config.models
        if change == "model id":
            model = dataclasses.replace(model, model="other-model")
        elif change == "params":
            config = dataclasses.replace(config, defaults={"temperature": 0.9})
        elif change == "stream":
            model = dataclasses.replace(model, stream=False)
        else:
            rows = prompt_rows(4)
            rows[2]["prompt"] = "A different question"
            write_jsonl(config.input, rows)
        changed = dataclasses.replace(config, models=(model,))
        with pytest.raises(UsageError, match="not comparable") as info:
            await arun(changed)
        if change == "prompt content":
            assert "p2" in str(info.value)
        assert sim.stats.requests == 4
        await arun(changed, force=True)
    assert len(part_files(config.output)) >= 1


async def test_harmless_changes_resume(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=4, run={"limit": 2})
        await arun(config)
        bigger = dataclasses.replace(
            config,
            limit=None,
            engine=dataclasses.replace(config.engine, concurrency=3, timeout_s=5),
        )
        result = await arun(bigger)
        assert (result.ok, result.already_done, sim.stats.requests) == (2, 2, 4)


def test_schema_extras_round_trip_through_the_journal(tmp_path: Path) -> None:
    schema = result_schema({"topic": pa.string(), "level": pa.int64()})
    writer = ResultWriter(tmp_path, "x")
    writer.open()
    writer.start(schema)
    writer.write({**row("m", "p0"), "topic": "t", "level": 3})
    recover(tmp_path)  # as if killed: journal -> part with the run's own schema
    df = pd.read_parquet(tmp_path)
    assert df[["topic", "level"]].values.tolist() == [["t", 3]]


def test_vectors_are_journalled_as_float32_bytes_and_come_back_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal(768).astype(np.float32) for _ in range(3)]
    writer = ResultWriter(tmp_path, "e")
    writer.open()
    writer.start(result_schema())
    for i, vector in enumerate(vectors):
        writer.write({**row("m", f"p{i}"), "embedding": vector, "dimensions": 768})
    writer.write(row("m", "chat"))  # no vector: null
    lines = next((tmp_path / JOURNAL_DIR).glob("e-*.jsonl")).read_bytes().splitlines()
    stored = json.loads(lines[0])["embedding"]
    assert isinstance(stored, str) and len(stored) == 4096  # 768 float32s: 4 KB of text
    recover(tmp_path)  # as if killed
    df = pd.read_parquet(tmp_path).set_index("prompt_id")
    for i, vector in enumerate(vectors):
        assert np.array_equal(df.loc[f"p{i}", "embedding"], vector)
    assert df.loc["chat", "embedding"] is None


def test_a_segment_of_wide_rows_is_full_before_its_row_count(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "w", rows_per_part=1000, bytes_per_part=18_000)
    writer.open()
    writer.start(result_schema())
    vector = np.ones(768, np.float32)  # about 5 KB a journal line
    for i in range(3):
        writer.write({**row("m", f"p{i}"), "embedding": vector})
    assert not writer.full
    writer.write({**row("m", "p3"), "embedding": vector})
    assert writer.full and writer.pending == 4
    writer.write_part(writer.rotate() or 0)
    assert not writer.full and writer.pending == 0
    writer.close()
    assert len(pd.read_parquet(tmp_path)) == 4


def test_a_journal_of_an_older_version_with_decimal_vectors_is_recovered(
    tmp_path: Path,
) -> None:
    writer = ResultWriter(tmp_path, "old")
    writer.open()
    writer.start(result_schema())
    segment = next((tmp_path / JOURNAL_DIR).glob("old-*.jsonl"))
    segment.write_text(json.dumps({**row("m", "p0"), "embedding": [0.5, -0.25]}) + "\n")
    assert recover(tmp_path) == 1
    assert pd.read_parquet(tmp_path)["embedding"][0].tolist() == [0.5, -0.25]


def test_new_columns_reach_old_parts_so_the_directory_reads_whole(tmp_path: Path) -> None:
    old_schema = result_schema().remove(result_schema().get_field_index("prompt_hash"))
    writer = ResultWriter(tmp_path, "a-old")
    writer.open()
    writer.start(old_schema)
    writer.write({k: v for k, v in row("m", "p0").items() if k != "prompt_hash"})
    writer.close()
    writer = ResultWriter(tmp_path, "b-new")
    writer.open()
    writer.start(result_schema({"topic": pa.string()}))
    writer.write({**row("m", "p1"), "prompt_hash": "abc", "topic": "t"})
    writer.close()
    df = pd.read_parquet(tmp_path).sort_values("prompt_id")
    assert df["prompt_hash"].isna().tolist() == [True, False]
    assert df["topic"].fillna("-").tolist() == ["-", "t"]


async def test_resume_of_an_unchanged_file_reuses_its_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llamabatch.prompts.promptset import PromptSet

    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=6, run={"limit": 4})
        first = await arun(config)
        assert first.ok == 4 and (config.output / "_scan" / "meta.json").is_file()

        def no_scan(self: PromptSet, visit: object = None) -> None:
            raise AssertionError("an unchanged, validated file was scanned again")

        with monkeypatch.context() as patch:
            patch.setattr(PromptSet, "scan", no_scan)
            more = await arun(dataclasses.replace(config, limit=None))
        assert (more.ok, more.already_done, sim.stats.requests) == (2, 4, 6)
        write_jsonl(config.input, [*prompt_rows(6), {"id": "new", "prompt": "Another?"}])
        changed = await arun(config := dataclasses.replace(config, limit=None))
        assert changed.ok == 1 and sim.stats.requests == 7
    assert len(pd.read_parquet(config.output)) == 7
