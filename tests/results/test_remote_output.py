"""`[run] output = "s3://..."`: results on a pyarrow.fs filesystem, tested on a real S3 server."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import anyio
import pandas as pd
import pytest

from llamabatch import SimProfile, SimServer, arun
from llamabatch.cli import main
from llamabatch.config.outputs import staging_dir
from llamabatch.errors import ConfigError, UsageError
from llamabatch.runs.raypool import _publish_journals
from tests.helpers import FAST, prompt_rows, sim_config, write_jsonl
from tests.s3server import S3, s3_server

pytestmark = pytest.mark.anyio
KEY = ["model", "prompt_id", "sample"]


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    with s3_server(tmp_path, monkeypatch) as server:
        yield server


def nothing_holds(s3: S3, staging: Path, *secrets: str) -> None:
    """No object, staged file or manifest holds a secret."""
    blobs = list(s3.objects().values())
    blobs += [p.read_bytes() for p in staging.rglob("*") if p.is_file()]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in blobs), secret


async def test_a_run_writes_its_results_to_s3_and_resumes_from_them(tmp_path: Path, s3: S3) -> None:
    uri = s3.uri("runs/first")
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=30, models=("m1", "m2"))
        result = await arun(config, output=uri)
        assert result.ok == 60 and not result.errors
        again = await arun(config, output=uri)  # resumed from the parts at the URI
        assert sim.stats.requests == 60 and again.ok == 0 and again.already_done == 60
    rows = pd.read_parquet(uri)  # pandas reads s3:// itself, with the AWS variables
    assert len(rows) == 60 and not rows.duplicated(KEY).any()
    assert (rows["status"] == "ok").all()
    assert len(result.dataframe()) == 60
    objects = s3.objects()
    manifest = json.loads(objects[f"{s3.bucket}/runs/first/_manifest.json"])
    assert manifest["status"] == "finished" and manifest["config"]["output"] == uri
    assert manifest["previous_runs"][0]["counts"]["ok"] == 60
    assert all(k.rsplit("/", 1)[1].startswith(("part-", "_manifest")) for k in objects), objects
    staging = staging_dir(uri)
    assert not list(staging.glob("part-*")) and not (staging / "_journal").exists()
    nothing_holds(s3, staging, s3.secret, "AKIATESTKEYID")


async def test_report_and_compare_read_s3_results(
    tmp_path: Path, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=12)
        await arun(config, output=s3.uri("base"))
        await arun(config, output=s3.uri("cand"))
    assert main(["report", s3.uri("base"), s3.uri("cand")]) == 0
    out = capsys.readouterr().out
    assert s3.uri("base") in out and "base/m1" in out and "cand/m1" in out
    # Latency is left out: two runs on a busy machine differ by more than its limits.
    assert main(["compare", "--no-latency", s3.uri("base"), s3.uri("cand")]) == 0
    out = capsys.readouterr().out
    assert f"Baseline `{s3.uri('base')}`" in out and "m1: 12 rows matched" in out


async def test_credentials_never_go_in_the_uri(tmp_path: Path) -> None:
    config = sim_config(tmp_path, "http://127.0.0.1:9/v1")
    for uri in ("s3://AKIAX:hunter2@bucket/x", "s3://bucket/x?secret_key=hunter2"):
        with pytest.raises(ConfigError, match="standard environment variables") as caught:
            await arun(config, output=uri, check=False)
        assert "hunter2" not in str(caught.value)


async def test_an_unwritable_uri_is_refused_before_anything_is_sent(tmp_path: Path, s3: S3) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url)
        with pytest.raises(UsageError, match=r"output s3://no-such-bucket/x: cannot write there"):
            await arun(config, output="s3://no-such-bucket/x")
        assert sim.stats.requests == 0


async def test_a_live_lease_refuses_a_second_run(tmp_path: Path, s3: S3) -> None:
    uri = s3.uri("leased")
    lease = {"holder": "llamabatch run (pid 1 on elsewhere)", "host": "elsewhere", "pid": 1}
    lease |= {"token": "theirs", "renewed": time.time()}
    fs = s3.fs()
    with fs.open_output_stream(f"{s3.bucket}/leased/_lease.json") as stream:
        stream.write(json.dumps(lease).encode())
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url)
        with pytest.raises(UsageError, match=r"in use by llamabatch run \(pid 1 on elsewhere\)"):
            await arun(config, output=uri)
        assert sim.stats.requests == 0
        # A lease its holder stopped renewing lapses.
        with fs.open_output_stream(f"{s3.bucket}/leased/_lease.json") as stream:
            stream.write(json.dumps(lease | {"renewed": time.time() - 120}).encode())
        assert (await arun(config, output=uri)).ok == 5
    assert f"{s3.bucket}/leased/_lease.json" not in s3.objects()  # released at the end


@pytest.mark.slow
async def test_a_killed_run_loses_nothing_on_s3(tmp_path: Path, s3: S3) -> None:
    # SIGKILL mid-run: what was journalled on the local disk is published by the next run.
    n, concurrency = 150, 4
    profile = SimProfile(ttft_s=0.02, tokens_per_s=400.0, output_tokens=20, jitter=0.0)
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
    config = tmp_path / "run.toml"
    async with SimServer(default=profile) as sim:
        config.write_text(
            f'[run]\ninput = "{prompts}"\noutput = "{s3.uri("killed")}"\n'
            f"[engine]\nconcurrency = {concurrency}\npart_interval_s = 3600\n"
            f'[[models]]\nname = "m"\nprovider = "openai"\nmodel = "m"\n'
            f'base_url = "{sim.base_url}"\n'
        )
        argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q", "--no-check"]
        env = {**os.environ, **s3.env}
        async with await anyio.open_process(argv, env=env) as process:
            await sim.wait_for_requests(60)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        journal = staging_dir(s3.uri("killed")) / "_journal"
        assert list(journal.glob("*.jsonl"))  # rows waiting on the local disk
        # What a --ray run does on every node first: publish journals of earlier runs.
        published = _publish_journals(s3.uri("killed"), "a-run-of-now")
        assert published > 0 and not list(journal.glob("*.jsonl"))
        assert len(pd.read_parquet(s3.uri("killed"))) >= published
        async with await anyio.open_process(argv, env=env) as process:
            assert process.stderr is not None
            err = b"".join([chunk async for chunk in process.stderr]).decode()
            assert await process.wait() == 0, err
        sent = sim.stats.requests
    rows = pd.read_parquet(s3.uri("killed"))
    assert len(rows) == n and rows["prompt_id"].is_unique and (rows["status"] == "ok").all()
    assert n <= sent <= n + concurrency, sent  # only the requests in flight were sent again
    nothing_holds(s3, staging_dir(s3.uri("killed")), s3.secret)
