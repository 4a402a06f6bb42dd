"""`[engine] workers = N`: N engine processes, one run (rows, limits, resume)."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import sys
from pathlib import Path

import anyio
import pandas as pd
import pytest
from anyio.abc import Process

import llamabatch
from llamabatch import SimProfile, SimServer, arun
from llamabatch.cli.commands import main
from llamabatch.config.runmodes import parse_workers, with_workers
from llamabatch.errors import ConfigError
from llamabatch.results.dirlock import LOCK_FILE
from llamabatch.runs.share import in_share, share
from tests.helpers import FAST, prompt_rows, sim_config, write_jsonl

pytestmark = pytest.mark.anyio
KEY = ["model", "prompt_id", "sample"]


def test_workers_setting_and_shares() -> None:
    def fail(name: str, message: str) -> ConfigError:
        return ConfigError(f"{name} {message}")

    assert parse_workers("auto", fail) == (os.cpu_count() or 1)
    assert parse_workers(3, fail) == parse_workers("3", fail) == 3
    for bad in (0, -1, "two", True, 10_000):
        with pytest.raises(ConfigError, match=r'workers must be 1\.\.256 processes or "auto"'):
            parse_workers(bad, fail)
    # Concurrency splits exactly; every worker may send at least one request.
    assert [share(10, i, 3) for i in range(3)] == [4, 3, 3]
    assert sum(share(64, i, 2) for i in range(2)) == 64
    # Every prompt belongs to exactly one worker, whatever the process.
    ids = [f"p{i}" for i in range(200)]
    owners = [[i for i in range(3) if in_share(p, i, 3)] for p in ids]
    assert all(len(o) == 1 for o in owners) and {o[0] for o in owners} == {0, 1, 2}


async def test_workers_2_write_the_same_rows_as_1(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(60))
    frames = []
    async with SimServer(default=FAST) as sim:
        for workers in (1, 2):
            config = sim_config(
                tmp_path / f"w{workers}",
                sim.base_url,
                prompts=prompts,
                models=("m1", "m2"),
                run={"repeats": 2},
            )
            result = await arun(config, workers=workers)
            assert result.ok == 240 and not result.errors  # the parent counted every row
            frames.append(pd.read_parquet(config.output))
        assert sim.stats.requests == 480
    one, two = (f.sort_values(KEY).reset_index(drop=True) for f in frames)
    assert len(two) == 240 and not two.duplicated(KEY).any()
    assert two[KEY].equals(one[KEY])
    assert two["output_text"].equals(one["output_text"])
    assert two["run_id"].nunique() == 1  # one run, whatever wrote the rows


async def test_shared_rpm_limit_holds_across_workers(tmp_path: Path) -> None:
    # The server allows 15 requests/s; each model's rpm = 600 allows 10/s. Two workers each
    # pacing itself at 10/s would send 20/s and meet 429s; sharing one bucket, they meet none.
    n = 40
    profile = SimProfile(ttft_s=0.01, tokens_per_s=0.0, output_tokens=5, retry_after_s=None)
    limited = SimServer(default=profile, rpm_limit=30, rpm_window_s=2.0, rate_headers=False)
    async with limited as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=n, engine={"workers": 2}, model_settings={"rpm": 600}
        )
        started = anyio.current_time()
        result = await arun(config)
        elapsed = anyio.current_time() - started
        assert sim.stats.statuses[429] == 0
    assert result.ok == n
    assert elapsed >= (n - 1) / 10.0  # never faster than the shared limit


@pytest.mark.slow
async def test_rate_limit_headers_are_shared(tmp_path: Path) -> None:
    limit, window, n = 20, 2.0, 60
    profile = SimProfile(ttft_s=0.01, tokens_per_s=0.0, output_tokens=5, retry_after_s=None)
    async with SimServer(default=profile, rpm_limit=limit, rpm_window_s=window) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=n, engine={"concurrency": 16})
        result = await arun(config, workers=2)
        rejected = sim.stats.statuses[429]
    print(f"\nshared x-ratelimit headers, 2 workers: {rejected} of {n + rejected} answered 429")
    assert result.ok == n
    # One process meets <= 5 here. Two engines learn the budget from the first responses
    # with a reply's delay, so a few more of the first window's requests can meet a 429;
    # at scale it stays near 1 % (benchmarks: "A rate limit shared by processes").
    assert rejected <= 10, rejected


def test_workers_override_is_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = sim_config(tmp_path, "http://127.0.0.1:9/v1")
    assert with_workers(config, None).engine.workers == 1
    assert with_workers(config, "2").engine.workers == 2
    with pytest.raises(ConfigError, match="--workers must be"):
        with_workers(config, "0")
    batch = sim_config(tmp_path, "http://127.0.0.1:9/v1", run={"mode": "batch"})
    assert "workers" not in caplog.text
    with_workers(batch, 2)  # not refused (workers = "auto" in a shared config), but said
    assert "workers = 2 not used: batch mode submits its batches from one process" in caplog.text


def write_config(tmp_path: Path, base_url: str, n: int, concurrency: int) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
input = "{prompts}"
output = "{tmp_path / "out"}"
[engine]
concurrency = {concurrency}
workers = 2
grace_s = 5
[[models]]
name = "m"
provider = "openai"
model = "m"
base_url = "{base_url}"
"""
    )
    return config


async def start(config: Path, **env: str) -> Process:
    argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q", "--no-check"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return await anyio.open_process(argv, env=env, start_new_session=True)


async def finish(process: Process) -> tuple[int, str]:
    async with process:
        assert process.stderr is not None
        err = b"".join([chunk async for chunk in process.stderr])
        code = await process.wait()
    return code, err.decode()


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


PROFILE = SimProfile(ttft_s=0.02, tokens_per_s=400.0, output_tokens=20, jitter=0.0)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds workers through /proc")
async def test_killed_worker_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    n, concurrency = 120, 4
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n, concurrency)
        process = await start(config)
        await sim.wait_for_requests(30)
        os.kill(children(process.pid)[0], signal.SIGKILL)  # the parent starts it again
        code, err = await finish(process)
        assert code == 0, err
        assert "worker 0 died" in err or "worker 1 died" in err, err
        code, err = await finish(await start(config))  # resuming finds nothing left to send
        assert code == 0, err
        sent = sim.stats.requests
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert n <= sent <= n + concurrency, sent  # at most the killed worker's requests in flight
    assert not (tmp_path / "out" / "_journal").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds workers through /proc")
async def test_killed_parent_stops_its_workers_and_resume_completes(tmp_path: Path) -> None:
    n, concurrency = 120, 4
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n, concurrency)
        process = await start(config)
        await sim.wait_for_requests(30)
        workers = children(process.pid)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)  # held still: they must outlive their parent here
        process.kill()
        await process.wait()  # its stderr stays open in the stopped workers: not read here
        await process.aclose()
        lock = os.open(tmp_path / "out" / LOCK_FILE, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the workers still hold the directory
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(lock)
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        for pid in workers:  # they see their socket close and exit
            with anyio.fail_after(30):
                while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
                    await anyio.sleep(0.05)
        code, err = await finish(await start(config))
        assert code == 0, err
        sent = sim.stats.requests
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert n <= sent <= n + 2 * concurrency, sent


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    except (FileNotFoundError, IndexError):
        return "Z"


@pytest.mark.slow
async def test_ctrl_c_with_workers_saves_rows_and_resume_completes(tmp_path: Path) -> None:
    n = 200
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n, 4)
        process = await start(config)
        await sim.wait_for_requests(20)
        process.send_signal(signal.SIGINT)
        code, err = await finish(process)
        assert code == 130, err
        first = pd.read_parquet(tmp_path / "out")
        assert 20 <= len(first) < n and (first["status"] == "ok").all()
        code, err = await finish(await start(config))
        assert code == 0, err
        assert sim.stats.requests == n
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == n and df["prompt_id"].is_unique


async def test_workers_read_the_prompts_with_the_runs_columns(tmp_path: Path) -> None:
    # A CSV export that needs [run] columns: every worker must read it as the parent did.
    csv = tmp_path / "qa.csv"
    csv.write_text("qid,question,answer\n" + "".join(f"q{i},What is {i}?,{i}\n" for i in range(20)))
    columns = {"prompt": "question", "expected": "answer", "id": "qid"}
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, prompts=csv, run={"columns": columns})
        result = await arun(config, workers=2)
    assert result.ok == 20 and not result.errors
    rows = pd.read_parquet(config.output)
    assert sorted(rows["prompt_id"]) == sorted(f"q{i}" for i in range(20))


@pytest.mark.parametrize("where", ["engine", "model"])
async def test_workers_never_exceed_a_concurrency_below_their_number(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    # concurrency = 1 (a local llama.cpp server) with workers = 3: one request at a time.
    profile = SimProfile(ttft_s=0.02, tokens_per_s=0.0, output_tokens=3)
    async with SimServer(default=profile) as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            n_prompts=12,
            engine={"workers": 3, **({"concurrency": 1} if where == "engine" else {})},
            model_settings={"concurrency": 1} if where == "model" else None,
        )
        result = await arun(config)
        assert sim.stats.max_in_flight == 1
    assert result.ok == 12
    assert "workers = 3 lowered to 1: m1's concurrency is 1" in caplog.text


# Loaded by every interpreter on its PYTHONPATH: breaks the worker processes' share only.
BROKEN_WORKER = """
import sys
if "llamabatch.runs.workerproc" in sys.orig_argv:
    from llamabatch.engine.engine import Engine

    async def broken(self, *args, **kwargs):
        raise RuntimeError("a bug in the worker")

    Engine.run = broken
"""


async def test_a_worker_failing_on_a_bug_fails_the_run(tmp_path: Path) -> None:
    # Our bug is not an interruption: no restarts of a worker that fails the same way
    # again, no "resume" advice; the traceback, and a non-zero exit.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BROKEN_WORKER)
    # This checkout's llamabatch, which the sitecustomize imports before `-m` adds the cwd.
    root = Path(llamabatch.__file__).parents[1]
    path = os.pathsep.join(str(p) for p in (site, root, os.environ.get("PYTHONPATH")) if p)
    async with SimServer(default=FAST) as sim:
        config = write_config(tmp_path, sim.base_url, 20, 4)
        with anyio.fail_after(60):
            code, err = await finish(await start(config, PYTHONPATH=path))
    assert code == 1, err
    assert "RuntimeError: a bug in the worker" in err
    assert "starting it again" not in err and "Resume with" not in err, err
    assert "worker 0 failed" in err or "worker 1 failed" in err, err


@pytest.mark.slow
async def test_sigterm_to_the_whole_group_stops_the_run_like_sigint(tmp_path: Path) -> None:
    # systemd (KillMode=control-group) and `kill -TERM -PGID` signal the workers too: they
    # must leave the stop to the parent, so the requests in flight finish and are stored.
    slow = SimProfile(ttft_s=0.3, tokens_per_s=100.0, output_tokens=20, jitter=0.0)
    async with SimServer(default=slow) as sim:
        config = write_config(tmp_path, sim.base_url, 200, 4)
        process = await start(config)
        await sim.wait_for_requests(12)
        os.killpg(process.pid, signal.SIGTERM)
        code, err = await finish(process)
        sent = sim.stats.requests
    assert code == 130, err
    assert "died" not in err, err
    rows = pd.read_parquet(tmp_path / "out")
    assert len(rows) == sent and (rows["status"] == "ok").all(), (len(rows), sent)


async def test_workers_share_the_response_cache(tmp_path: Path) -> None:
    # Each worker opens the cache file (SQLite, WAL): a rerun with two workers sends nothing,
    # and its keys are those of one process (either reads what the other stored).
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(40))
    frames = {}
    async with SimServer(default=FAST) as sim:
        for name, workers, cache, sent in (
            ("one", 1, "c1", 80),  # the reference: one process, its own cache
            ("two", 2, "c2", 80),  # two workers fill a cache...
            ("again", 2, "c2", 0),  # ...that answers a rerun with two workers
            ("single", 1, "c2", 0),  # and one with a single process
            ("back", 2, "c1", 0),  # and two workers read what one process stored
        ):
            before = sim.stats.requests
            config = sim_config(tmp_path / name, sim.base_url, prompts=prompts, models=("m1", "m2"))
            result = await arun(config, workers=workers, cache=tmp_path / cache)
            assert sim.stats.requests - before == sent, name  # counted at the server
            assert result.ok == 80 and not result.errors, name
            frames[name] = pd.read_parquet(config.output).sort_values(KEY).reset_index(drop=True)
    # The same rows as one process; a cached row is the stored answer, timings included.
    assert frames["two"][[*KEY, "output_text"]].equals(frames["one"][[*KEY, "output_text"]])
    columns = [*KEY, "output_text", "completion_tokens", "ttft_s", "latency_s"]
    for name, source in (("again", "two"), ("single", "two"), ("back", "one")):
        pd.testing.assert_frame_equal(frames[name][columns], frames[source][columns])
        assert frames[name]["cached"].all() and (frames[name]["attempts"] == 0).all(), name
    assert not frames["two"]["cached"].any()


def test_workers_hit_the_cache_of_a_simulator_the_run_starts(tmp_path: Path) -> None:
    # A started server has a new port in every run: the keys name it as configured.
    root = Path(llamabatch.__file__).parents[1]
    cache = str(tmp_path / "c.sqlite3")
    config = str(root / "configs" / "quickstart.toml")
    args = ["run", config, "--limit", "6", "--cache", cache, "--workers", "2", "-q", "--no-check"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    first, second = (pd.read_parquet(tmp_path / d) for d in ("a", "b"))
    assert len(second) == 18 and second["cached"].all() and not first["cached"].any()


async def test_the_manifest_counts_every_worker_process(tmp_path: Path) -> None:
    # The client figures cover the parent and each worker, each worker's CPU as the kernel
    # counted it; checked against this process's own count of its children's CPU.
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=200)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = await arun(config, workers=2)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        one = await arun(sim_config(tmp_path / "one", sim.base_url, n_prompts=5))
    children = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    client = json.loads((config.output / "_manifest.json").read_text())["client"]
    assert client == json.loads(json.dumps(result.client))
    workers = client["workers"]
    assert client["processes"] == 3 and sorted(w["worker"] for w in workers) == [0, 1]
    assert all(w["exit_code"] == 0 and w["cpu_s"] > 0.1 for w in workers)  # an interpreter each
    assert sum(w["cpu_s"] for w in workers) == pytest.approx(children, abs=0.02)
    total = client["parent"]["cpu_s"] + sum(w["cpu_s"] for w in workers)
    assert client["cpu_s"] == pytest.approx(total, abs=0.002)
    assert client["cpu_s"] > client["parent"]["cpu_s"] + 0.2
    # Lag and memory from each worker's own monitor; the run's lag is the worst worker's.
    assert all(w["max_rss_mb"] > 10 and "loop_lag_p99_ms" in w for w in workers)
    assert client["loop_lag_p99_ms"] == max(w["loop_lag_p99_ms"] for w in workers)
    assert "worker process" in client["sources"]["cpu_s"]
    # One process says what it measured, too.
    assert one.ok == 5
    assert one.client["sources"]["cpu_s"] == "this process (user + system)"
    assert "workers" not in one.client
