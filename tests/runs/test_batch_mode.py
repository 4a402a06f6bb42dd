"""Batch mode end to end on the simulator: same rows as online, failures, resume, cancel."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path

import anyio
import pandas as pd
import pytest

from llamabatch import SimServer, UsageError, arun
from llamabatch.cli.commands import main
from llamabatch.results.batchlog import BatchLog
from llamabatch.runs.batchadmin import batch_rows, cancel_batches
from llamabatch.scoring import Scoring
from tests.helpers import FAST, ROOT, prompt_rows, sim_config, write_jsonl

pytestmark = pytest.mark.anyio
KEY = ["model", "prompt_id", "sample"]
POLL = {"batch_poll_s": 0.01, "batch_poll_max_s": 0.05}


def _sorted(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(KEY).reset_index(drop=True)


@pytest.mark.slow
def test_quickstart_in_batch_mode_gives_the_online_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    online, batch = tmp_path / "online", tmp_path / "batch"
    assert main(["run", "configs/quickstart.toml", "-o", str(online), "-q"]) == 0
    assert main(["run", "configs/quickstart.toml", "-o", str(batch), "--batch"]) == 0
    captured = capsys.readouterr()
    summary = captured.out
    assert "maverick: collected (40+0 failed/40)" in captured.err  # the progress bar
    a, b = _sorted(online), _sorted(batch)
    assert len(b) == 120 and b[KEY].equals(a[KEY])
    assert b["output_text"].equals(a["output_text"])
    assert (
        b["completion_tokens"].equals(a["completion_tokens"])
        and (b["usage_source"] == "server").all()
    )
    assert b["batch_id"].notna().all() and a["batch_id"].isna().all()
    for column in ("ttft_s", "latency_s", "decode_tps", "itl_mean_s"):
        assert b[column].isna().all(), column
    assert (b["finished_at"] >= b["started_at"]).all()
    assert "via batch" in summary and "0.000s" not in summary
    assert main(["report", str(batch)]) == 0
    assert main(["compare", str(online), str(batch)]) == 0
    report = capsys.readouterr().out
    assert "via batch" in report and "| 0.000s" not in report
    assert main(["batches", str(batch)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("collected") == 3 and "maverick" in listing


async def test_line_failures_and_an_expired_batch_are_error_rows_resent_next_run(
    tmp_path: Path,
) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=40, engine=POLL, run={"mode": "batch"}
        )
        sim.batches.timing.line_error_rate = 0.2
        sim.batches.timing.poll_error_every = 2  # every other poll answers 500: retried
        first = await arun(config)
        failed = _sorted(config.output).query("status == 'error'")
        assert 0 < len(failed) == first.error_count < 40 and first.exit_code == 3
        assert set(failed["error_type"]) == {"server"}
        assert failed["error_message"].str.contains("simulated line failure").all()
        sim.batches.timing.line_error_rate = 0.0
        sim.batches.timing.expire = True
        second = await arun(config)  # re-submits only the failed rows; half of them expire
        assert sum(sim.batches.submitted.values()) == 40 + len(failed)
        resent = {k for k, v in sim.batches.submitted.items() if v == 2}
        assert resent == {f"m1:0:{p}" for p in failed["prompt_id"]}
        expired = _sorted(config.output).query("status == 'error'")
        assert len(expired) == second.error_count == len(failed) - len(failed) // 2
        assert set(expired["error_type"]) == {"timeout"}
        assert expired["error_message"].str.contains("batch_expired").all()
        sim.batches.timing.expire = False
        third = await arun(config)
        assert third.exit_code == 0 and third.ok == len(expired)
    rows = _sorted(config.output)
    assert len(rows) == 40 and (rows["status"] == "ok").all() and rows["prompt_id"].is_unique


async def test_a_batch_not_created_fails_its_rows_and_the_next_run_creates_it_once(
    tmp_path: Path,
) -> None:
    engine = {**POLL, "max_retries": 1}
    async with SimServer(default=FAST) as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=6, engine=engine, run={"mode": "batch"}
        )
        sim.batches.timing.create_errors = 10  # every attempt of this run answered 500
        first = await arun(config)
        assert first.exit_code == 3 and first.error_count == 6 and first.ok == 0
        rows = _sorted(config.output)
        assert len(rows) == 6 and (rows["error_type"] == "server").all()
        assert rows["error_message"].str.contains("creating the batch of request file").all()
        assert rows["error_message"].str.contains("run again").all()
        (chunk,) = BatchLog(config.output).pending()  # kept: the provider may have made it
        assert chunk.creating and chunk.batch_id is None
        assert sum(sim.batches.submitted.values()) == 0
        sim.batches.timing.create_errors = 0
        second = await arun(config)  # looks for the batch by its file, then creates it
        assert second.exit_code == 0 and second.ok == 6
        assert sim.batches.calls["upload"] == 1  # the same request file, not a new one
        assert sorted(sim.batches.submitted.values()) == [1] * 6
    rows = _sorted(config.output)
    assert len(rows) == 6 and (rows["status"] == "ok").all() and rows["batch_id"].notna().all()


async def test_a_chunk_without_a_batch_is_dropped_once_its_rows_are_answered_online(
    tmp_path: Path,
) -> None:
    engine = {**POLL, "max_retries": 1}
    async with SimServer(default=FAST) as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=6, engine=engine, run={"mode": "batch"}
        )
        sim.batches.timing.create_errors = 10
        assert (await arun(config)).exit_code == 3
        sim.batches.timing.create_errors = 0
        online = await arun(dataclasses.replace(config, mode="online"))
        assert online.exit_code == 0 and online.ok == 6
        again = await arun(config)  # nothing pending: the chunk is dropped, never created
        assert again.exit_code == 0 and again.ok == 0
        assert sum(sim.batches.submitted.values()) == 0
        assert BatchLog(config.output).pending() == []
    rows = _sorted(config.output)
    assert len(rows) == 6 and (rows["status"] == "ok").all() and rows["batch_id"].isna().all()


async def test_files_are_split_by_the_providers_limits_and_the_cache_is_used(
    tmp_path: Path,
) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=25, engine=POLL, run={"mode": "batch"}
        )
        limits = dataclasses.replace(config.models[0].batch, max_requests=10, max_bytes=1500)  # type: ignore[type-var]
        model = dataclasses.replace(config.models[0], batch=limits)
        config = dataclasses.replace(config, models=(model,))
        cache = tmp_path / "cache.sqlite3"
        await arun(config, cache=cache)
        sizes = [len(c) for c in sim.batches.files.values()]
        chunks = BatchLog(config.output).chunks.values()
        assert len(chunks) >= 3 and all(c.requests <= 10 for c in chunks)
        assert sum(c.requests for c in chunks) == 25
        assert max(sizes[: len(chunks)]) <= 1500  # the request files come first
        submitted = sum(sim.batches.submitted.values())
        again = await arun(config, output=tmp_path / "again", cache=cache)
        assert sum(sim.batches.submitted.values()) == submitted  # a cached key is not batched
        assert again.ok == 25
    rows = pd.read_parquet(tmp_path / "again")
    assert rows["cached"].all() and rows["batch_id"].isna().all()  # nothing was sent


async def test_batches_lists_and_cancels_what_is_in_flight(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        sim.batches.timing.in_progress_s = 3600
        config = sim_config(tmp_path, sim.base_url, n_prompts=5, engine=POLL, run={"mode": "batch"})
        sim.batches.hold = {"poll"}
        async with anyio.create_task_group() as tg:
            tg.start_soon(arun, config)
            await sim.batches.reached("poll")
            tg.cancel_scope.cancel()
        sim.batches.release()
        (row,) = batch_rows(config.output)
        assert row["batch_id"] != "-" and row["state"] == "submitted"
        ((chunk, outcome),) = await cancel_batches(config.output)
        assert outcome == "cancelled" and chunk == row["chunk"]
        assert batch_rows(config.output)[0]["state"] == "cancelled"
        result = await arun(config)  # re-attaches, finds it cancelled: error rows
        assert result.error_count == 5
    rows = _sorted(config.output)
    assert (rows["error_type"] == "cancelled").all()


async def test_cancel_is_refused_while_a_run_holds_the_directory(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(5))
    out, path = tmp_path / "out", tmp_path / "c.toml"
    log = out / "_batches" / "log.jsonl"
    async with SimServer(default=FAST) as sim:
        sim.batches.timing.in_progress_s = 3600
        path.write_text(
            f'[run]\ninput = "{prompts}"\noutput = "{out}"\nmode = "batch"\n'
            "[engine]\nbatch_poll_s = 0.01\nbatch_poll_max_s = 0.05\n"
            f'[[models]]\nname = "m"\nprovider = "openai"\nbase_url = "{sim.base_url}"\n'
        )
        sim.batches.hold = {"poll"}
        run = [sys.executable, "-m", "llamabatch", "run", "-q", str(path)]
        process = await anyio.open_process(run, stdout=None, stderr=None)
        try:
            await sim.batches.reached("poll")  # a real run in flight: it holds OUTPUT/.lock
            before = log.read_bytes()
            cancel = [sys.executable, "-m", "llamabatch", "batches", str(out), "--cancel"]
            refused = await anyio.run_process(cancel, check=False)
            after, cancels = log.read_bytes(), sim.batches.calls["cancel"]
        finally:  # the run ends before any assertion, so a failure cannot leave it waiting
            process.send_signal(signal.SIGINT)
            sim.batches.release()
            code = await process.wait()
        assert code == 130 and after == before and cancels == 0  # nothing sent, nothing logged
        err = refused.stderr.decode()
        assert refused.returncode == 2 and err.count("\n") == 1, err
        assert f"{out} is in use by llamabatch run (pid {process.pid})" in err
        ((_, outcome),) = await cancel_batches(out)  # the run gone, cancelling goes ahead
        assert outcome == "cancelled" and sim.batches.calls["cancel"] == 1


def test_a_meta_model_in_batch_mode_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(2))
    path = tmp_path / "c.toml"
    path.write_text(
        f'[run]\ninput = "{prompts}"\noutput = "{tmp_path / "out"}"\nmode = "batch"\n'
        '[[models]]\nname = "maverick"\npreset = "meta"\napi_key_env = ""\n'
        'model = "Llama-4-Maverick-17B-128E-Instruct-FP8"\n'
    )
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model 'maverick' (preset meta) has no Batch API" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


async def test_batch_rows_cost_the_discounted_price(tmp_path: Path) -> None:
    prices = {"usd_per_mtok": {"input": 1.0, "output": 2.0}}
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, engine=POLL, model_settings=prices)
        await arun(config, batch=True)
        await arun(config, output=tmp_path / "online")
    batch, online = _sorted(config.output), _sorted(tmp_path / "online")
    assert config.models[0].batch_discount == 1.0  # no preset: no discount assumed
    discounted = dataclasses.replace(config.models[0], batch_discount=0.5)
    rescored = Scoring.from_config(dataclasses.replace(config, models=(discounted,)))
    rows = batch.to_dict("records")
    assert [rescored.cost(r) for r in rows] == pytest.approx(list(online["cost_usd"] / 2))
    assert batch["cost_usd"].tolist() == pytest.approx(online["cost_usd"].tolist())


async def test_a_conversation_is_refused_in_batch_mode(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "c", "turns": ["Hi", "And then?"]}])
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, prompts=prompts, engine=POLL)
        with pytest.raises(UsageError, match=r"prompt 'c' is a conversation .*run it online"):
            await arun(config, batch=True)
    assert sum(sim.batches.submitted.values()) == 0


async def test_cancel_in_a_directory_without_batches_leaves_nothing_there(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no batches"):
        await cancel_batches(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no lock file left in someone else's folder
