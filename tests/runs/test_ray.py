"""`llamabatch run --ray` on a local Ray cluster: actors, a named limiter, a killed actor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import anyio
import pandas as pd
import pytest
from anyio.abc import Process

from llamabatch import SimProfile, SimServer
from llamabatch.config.outputs import staging_dir
from llamabatch.results.manifest import read_manifest
from tests.helpers import prompt_rows, write_jsonl

pytest.importorskip("ray")
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(300)]
PROFILE = SimProfile(ttft_s=0.02, tokens_per_s=400.0, output_tokens=20, jitter=0.0)


def write_config(
    tmp_path: Path, base_url: str, n: int, engine: str = "", output: str | None = None
) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
input = "{prompts}"
output = "{output or tmp_path / "out"}"
[engine]
concurrency = 8
workers = 2
{engine}
[[models]]
name = "m"
provider = "openai"
model = "m"
base_url = "{base_url}"
"""
    )
    return config


async def ray_run(config: Path, *, kill_after: SimServer | None = None) -> tuple[int, str]:
    """`llamabatch run CONFIG --ray` on a local cluster it starts; optionally SIGKILL one of
    its share actors once the server has seen 40 requests."""
    argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q", "--ray"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    async with await anyio.open_process(argv, env={**env, "PYTHONUNBUFFERED": "1"}) as process:
        if kill_after is not None:
            await kill_after.wait_for_requests(40)
            with anyio.fail_after(60):
                while not (actors := share_actors(process.pid)):
                    await anyio.sleep(0.1)
            os.kill(actors[0], signal.SIGKILL)
        return await finish(process)


def share_actors(driver: int) -> list[int]:
    """The driver's ShareActor processes (Ray names them after the actor's class and method;
    the local cluster, so its actors, descend from the driver)."""
    parents, actors = {}, []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if (proc / "cmdline").read_bytes().startswith(b"ray::ShareActor"):
                actors.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == driver:
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid in actors if descends(pid)]


async def test_ray_actors_share_the_run_and_a_killed_actor_costs_only_its_requests(
    tmp_path: Path, output: tuple[str, Path]
) -> None:
    n, concurrency = 160, 8
    where, local = output
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n, output=where)
        code, err = await ray_run(config, kill_after=sim)
        assert code == 0, err[-3000:]
        assert "Ray actor" in err and "died" in err, err[-3000:]
        client = read_manifest(local)["client"]  # type: ignore[index]
        assert [a["cpu_s"] for a in client["actors"]].count(None) == 1  # the killed one's
        assert client["cpu_s"] is None and client["cpu_share"] is None  # not known: not guessed
        code, err = await ray_run(config)  # a resumed driver finds nothing left to send
        assert code == 0, err[-3000:]
        sent = sim.stats.requests
    df = pd.read_parquet(where)
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert df["run_id"].nunique() == 1
    assert n <= sent <= n + concurrency, sent  # at most the killed actor's requests in flight
    assert not (local / "_journal").exists()


async def test_ray_actors_share_one_rpm_limit(tmp_path: Path) -> None:
    # The server allows 15 requests/s; rpm = 600 allows 10/s for the whole cluster.
    n = 40
    profile = SimProfile(ttft_s=0.01, tokens_per_s=0.0, output_tokens=5, retry_after_s=None)
    limited = SimServer(default=profile, rpm_limit=30, rpm_window_s=2.0, rate_headers=False)
    async with limited as sim:
        config = write_config(tmp_path, sim.base_url, n)
        text = config.read_text().replace('name = "m"', 'name = "m"\nrpm = 600')
        config.write_text(text)
        code, err = await ray_run(config)
        assert code == 0, err[-3000:]
        assert sim.stats.statuses[429] == 0
    assert len(pd.read_parquet(tmp_path / "out")) == n


async def start_ray(config: Path, address: str | None = None) -> Process:
    """The CLI's `run CONFIG --ray` in a session of its own (as a terminal runs it), on a
    local cluster of its own or on the cluster at `address`."""
    argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q", "--ray"]
    argv += ["--ray-address", address] if address else []
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if address:
        env["RAY_AUTH_MODE"] = "disabled"  # as the test's cluster (see below)
    env["PYTHONUNBUFFERED"] = "1"
    return await anyio.open_process(argv, env=env, start_new_session=True)


async def finish(process: Process) -> tuple[int, str]:
    """The driver's exit code and stderr. Not "stderr until its end": Ray's node agents
    inherit the pipe and may keep it open for a minute after the driver is gone."""
    chunks: list[bytes] = []

    async def read() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            chunks.append(chunk)

    async with process, anyio.create_task_group() as tg:
        tg.start_soon(read)
        code = await process.wait()
        await anyio.sleep(1)  # what is still in the pipe
        tg.cancel_scope.cancel()
    return code, b"".join(chunks).decode(errors="replace")


def descendants(pid: int) -> list[int]:
    """Every live process under `pid` (the local Ray cluster and its actors included)."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(proc.name)] = int(stat[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, of in parents.items():
            if of == parent:
                found.append(child)
                frontier.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(params=["local", "s3"])
def output(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Where a run writes: a local directory, or an s3:// URI on a real S3 server (moto's)."""
    if request.param == "local":
        yield str(tmp_path / "out"), tmp_path / "out"
        return
    from tests.s3server import s3_server

    with s3_server(tmp_path, monkeypatch) as s3:
        uri = s3.uri("ray")
        yield uri, staging_dir(uri)


async def test_ctrl_c_of_a_ray_run_stores_what_finished_and_resume_sends_the_rest_once(
    tmp_path: Path,
) -> None:
    n = 200
    where, local = str(tmp_path / "out"), tmp_path / "out"
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n, "grace_s = 10", where)
        process = await start_ray(config)
        await sim.wait_for_requests(40)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        code, err = await finish(process)
        assert code == 130, err[-3000:]
        first = pd.read_parquet(where)
        sent = sim.stats.requests
        assert 40 <= len(first) < n and (first["status"] == "ok").all(), err[-3000:]
        assert len(first) == sent, (len(first), sent)  # every request sent was stored
        code, err = await finish(await start_ray(config))
        assert code == 0, err[-3000:]
        assert sim.stats.requests == n  # each request sent once, across both runs
    df = pd.read_parquet(where)
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert not (local / "_journal").exists()


async def test_killed_ray_driver_takes_its_actors_and_resume_completes(
    tmp_path: Path, output: tuple[str, Path]
) -> None:
    n, concurrency = 200, 8
    where, local = output
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n, output=where)
        process = await start_ray(config)
        await sim.wait_for_requests(40)
        with anyio.fail_after(60):
            while not share_actors(process.pid):
                await anyio.sleep(0.1)
        # Ray's node agents stay a minute or two after their raylet, reporting its death
        # to a GCS that is gone; they run nothing of the job. Everything else must stop.
        ray_processes = [p for p in descendants(process.pid) if not cmdline(p).endswith("Agent")]
        process.kill()
        await process.wait()
        killed = anyio.current_time()
        with anyio.fail_after(60):  # nothing of the run goes on without its driver
            while [p for p in ray_processes if alive(p)]:
                await anyio.sleep(0.2)
        print(f"the run's processes stopped {anyio.current_time() - killed:.1f} s after its driver")
        await process.aclose()
        code, err = await finish(await start_ray(config))
        assert code == 0, err[-3000:]
        sent = sim.stats.requests
    df = pd.read_parquet(where)
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert n <= sent <= n + concurrency, sent  # at most the requests in flight are sent again
    assert not (local / "_journal").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def test_killed_driver_of_a_ray_cluster_ends_its_actors_there(tmp_path: Path) -> None:
    # A cluster started apart (`ray start --head`, as on real machines) outlives the driver:
    # Ray must end the job's actors when the driver dies, and the cluster takes the resume.
    port = free_port()
    head = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block"]
    head += [f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    # Ray's sockets live under --temp-dir: a short path (AF_UNIX allows 107 bytes).
    temp = tempfile.mkdtemp(prefix="lbray-")
    head += ["--disable-usage-stats", f"--temp-dir={temp}"]
    # `ray start` turns on token authentication, which a driver joins only with the head's
    # token file and RAY_AUTH_MODE=token (see the README); off for this private cluster.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    log = (tmp_path / "head.log").open("wb")  # read by no one: not a pipe that fills up
    cluster = await anyio.open_process(
        head, env=env, start_new_session=True, stdout=log, stderr=log
    )
    try:
        address = f"127.0.0.1:{port}"
        # `ray start --head` returns once the head listens; with --block it does not return,
        # so wait for its port (a driver refuses an address that accepts no connection).
        with anyio.fail_after(120):
            while not accepts(port):
                await anyio.sleep(0.2)
        n, concurrency = 200, 8
        async with SimServer(default=PROFILE) as sim:
            config = write_config(tmp_path, sim.base_url, n)
            process = await start_ray(config, address)
            with anyio.fail_after(120):
                await sim.wait_for_requests(40)
            with anyio.fail_after(60):
                while not (actors := share_actors(cluster.pid)):
                    await anyio.sleep(0.1)
            process.kill()
            await process.wait()
            await process.aclose()
            with anyio.fail_after(60):  # the cluster ends the dead driver's actors
                while [p for p in actors if alive(p)]:
                    await anyio.sleep(0.2)
            code, err = await finish(await start_ray(config, address))
            assert code == 0, err[-3000:]
            sent = sim.stats.requests
        assert not share_actors(cluster.pid)  # the resumed driver's actors ended with it
    finally:
        cluster.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        with anyio.move_on_after(60):
            await cluster.wait()
        if cluster.returncode is None:
            os.killpg(cluster.pid, signal.SIGKILL)
        await cluster.aclose()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert n <= sent <= n + concurrency, sent


async def test_an_actor_without_the_prompt_file_fails_the_run_in_one_line(tmp_path: Path) -> None:
    # As on a node without the shared storage: the driver validated the file, the actors
    # cannot read it. One line and exit 2, not actors started again and again.
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, 20)
        process = await start_ray(config)
        with anyio.fail_after(60):
            while not (tmp_path / "out" / "_manifest.json").exists():  # validated, Ray starting
                await anyio.sleep(0.02)
        (tmp_path / "p.jsonl").unlink()
        code, err = await finish(process)
        assert sim.stats.requests == 0
    assert code == 2, err[-3000:]
    assert "p.jsonl: not found on" in err and "every node needs the prompt file" in err, err
    assert "died" not in err, err[-3000:]


async def test_ray_actors_share_the_response_cache_and_the_manifest_counts_every_actor(
    tmp_path: Path,
) -> None:
    n = 30
    cache = tmp_path / "cache.sqlite3"
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n)
        config.write_text(config.read_text().replace("[run]\n", f'[run]\ncache = "{cache}"\n'))
        code, err = await ray_run(config)
        assert code == 0, err[-3000:]
        assert sim.stats.requests == n
        again = config.read_text().replace(str(tmp_path / "out"), str(tmp_path / "again"))
        config.write_text(again)
        code, err = await ray_run(config)  # a new output: every answer is in the cache
        assert code == 0, err[-3000:]
        assert sim.stats.requests == n  # nothing sent again
    first = pd.read_parquet(tmp_path / "out")
    rows = pd.read_parquet(tmp_path / "again")
    assert len(rows) == n and rows["cached"].all() and not first["cached"].any()
    assert sorted(rows["output_text"]) == sorted(first["output_text"])
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    client = manifest["client"]
    actors = [a for a in client["actors"] if "actor" in a]
    limiter = [a for a in client["actors"] if a.get("limiter")]
    assert sorted(a["actor"] for a in actors) == [0, 1] and len(limiter) == 1
    assert client["processes"] == 4  # the driver, two share actors, the limiter
    assert all(a["cpu_s"] > 0 and a["max_rss_mb"] > 0 for a in actors + limiter)
    parts = client["parent"]["cpu_s"] + sum(a["cpu_s"] for a in actors + limiter)
    assert client["cpu_s"] == pytest.approx(parts, abs=0.01)
    assert client["loop_lag_p99_ms"] == max(a["loop_lag_p99_ms"] for a in actors)
    assert "share actor" in client["sources"]["cpu_s"]
    assert manifest["counts"]["ok"] == n
    assert json.loads((tmp_path / "again" / "_manifest.json").read_text())["counts"]["cached"] == n
