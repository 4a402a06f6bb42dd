"""The lease of a remote output: a renewal never takes back a lease another run holds."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anyio
import pandas as pd
import pytest

from llamabatch import SimProfile, SimServer, arun
from llamabatch.errors import LeaseLost
from llamabatch.results import remote
from llamabatch.results.remote import Lease, Remote
from tests.helpers import prompt_rows, sim_config, write_jsonl
from tests.s3server import S3, s3_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    with s3_server(tmp_path, monkeypatch) as server:
        yield server


def lease_object(s3: S3, name: str) -> dict[str, object] | None:
    raw = s3.objects().get(f"{s3.bucket}/{name}/_lease.json")
    return None if raw is None else dict(json.loads(raw))


def age(s3: S3, name: str, record: dict[str, object]) -> None:
    """Write `record` as renewed two TTLs ago: its holder stalled."""
    stale = {**record, "renewed": time.time() - 2 * remote.LEASE_TTL_S}
    with s3.fs().open_output_stream(f"{s3.bucket}/{name}/_lease.json") as stream:
        stream.write(json.dumps(stale).encode())


async def hold(s3: S3, name: str, record: dict[str, object]) -> None:
    """Another run holding the lease of `name`: it writes its record, and again every 0.2 s
    (as a holder renews it) until cancelled."""
    while True:
        with s3.fs().open_output_stream(f"{s3.bucket}/{name}/_lease.json") as stream:
            stream.write(json.dumps(record).encode())
        await anyio.sleep(0.2)


def test_a_stalled_holder_finds_its_lease_taken_and_does_not_steal_it_back(s3: S3) -> None:
    uri = s3.uri("two")
    first = Lease(Remote(uri), "run")  # a Remote each: as two processes
    first.acquire()
    try:
        age(s3, "two", first.record)  # the first run could not renew for a while
        second = Lease(Remote(uri), "run")
        second.acquire()  # its lease lapsed: the second run takes it
        assert not first.renew()
        assert lease_object(s3, "two")["token"] == second.record["token"]  # type: ignore[index]
        with pytest.raises(LeaseLost, match=r"lost its lease .* holds it now"):
            first.remote.write("_manifest.json", b"{}")
        assert "_manifest.json" not in {k.rsplit("/", 1)[1] for k in s3.objects()}
        first.release()  # does not delete the second run's lease
        assert lease_object(s3, "two")["token"] == second.record["token"]  # type: ignore[index]
        assert second.renew()  # the holder renews as before
        renewed = lease_object(s3, "two")
        assert renewed is not None and renewed["token"] == second.record["token"]
        second.release()
        assert lease_object(s3, "two") is None
    finally:
        first.release()


def test_a_holder_renews_its_own_lease(s3: S3) -> None:
    lease = Lease(Remote(s3.uri("own")), "run")
    lease.acquire()
    before = lease_object(s3, "own")
    assert before is not None
    time.sleep(0.01)  # a later timestamp, not synchronisation
    assert lease.renew()
    after = lease_object(s3, "own")
    assert after is not None and after["token"] == before["token"]
    assert float(after["renewed"]) > float(before["renewed"])  # type: ignore[arg-type]
    lease.release()


async def test_a_run_whose_lease_is_taken_stops_and_keeps_its_rows(
    tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "RENEW_S", 0.1)
    n = 200
    slow = SimProfile(ttft_s=0.05, tokens_per_s=100.0, output_tokens=10, jitter=0.0)
    uri = s3.uri("taken")
    other = {"holder": "llamabatch run (pid 7 on node-9)", "host": "node-9", "pid": 7}
    other |= {"token": "the-other-run", "renewed": time.time()}
    async with SimServer(default=slow) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=n, engine={"concurrency": 4})

        async def take_over() -> None:
            await sim.wait_for_requests(12)
            await hold(s3, "taken", other)

        caught: LeaseLost | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(take_over)
            try:
                await arun(config, output=uri)
            except LeaseLost as exc:
                caught = exc
            tg.cancel_scope.cancel()
        sent = sim.stats.requests
        assert caught is not None and sent < n  # it stopped
        message = str(caught)
        assert "\n" not in message and "llamabatch run (pid 7 on node-9) holds it now" in message
        assert lease_object(s3, "taken") == other  # never written back, nor deleted
        # Once the other run is done (its lease released), a rerun publishes the kept rows.
        s3.fs().delete_file(f"{s3.bucket}/taken/_lease.json")
        again = await arun(config, output=uri)
        assert sim.stats.requests - sent == again.ok  # rows kept were not sent again
    rows = pd.read_parquet(uri)
    assert len(rows) == n and rows["prompt_id"].is_unique and (rows["status"] == "ok").all()


# The command line, renewing its lease every 0.1 s (LEASE_TTL_S / 3 = 20 s otherwise).
CLI = (
    "import sys; from llamabatch.results import remote; remote.RENEW_S = 0.1; "
    "from llamabatch.cli import main; sys.exit(main(sys.argv[1:]))"
)


async def test_the_command_line_says_how_to_publish_the_kept_rows(tmp_path: Path, s3: S3) -> None:
    slow = SimProfile(ttft_s=0.05, tokens_per_s=100.0, output_tokens=10, jitter=0.0)
    other = {
        "holder": "llamabatch run (pid 8 on node-2)",
        "token": "theirs",
        "renewed": time.time(),
    }
    async with SimServer(default=slow) as sim:
        prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(200))
        config = tmp_path / "run.toml"
        config.write_text(
            f'[run]\ninput = "{prompts}"\noutput = "{s3.uri("cli")}"\n[engine]\nconcurrency = 4\n'
            f'[[models]]\nname = "m"\nprovider = "openai"\nmodel = "m"\n'
            f'base_url = "{sim.base_url}"\n'
        )
        argv = [sys.executable, "-c", CLI, "run", str(config), "-q"]
        async with await anyio.open_process(argv, env={**os.environ, **s3.env}) as process:
            await sim.wait_for_requests(8)
            assert process.stderr is not None
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    # The other run holds the lease and renews it (a write landing between
                    # a renewal's read and write is overwritten: no conditional write).
                    tg.start_soon(hold, s3, "cli", other)
                    err = b"".join([chunk async for chunk in process.stderr]).decode()
                    code = await process.wait()
                    tg.cancel_scope.cancel()
        assert sim.stats.requests < 200
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"llamabatch: error: {s3.uri('cli')}: this run lost its lease"), line
    assert "llamabatch run (pid 8 on node-2) holds it now" in line
    assert "once that run is done, publish this run's rows with: llamabatch run " in line
