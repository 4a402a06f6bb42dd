"""Issue #14, the output directory (cases 5 and 13): unusable, full, or wanted by two writers.

The second writer is always a real `llamabatch` child process; the first is a run in
this process whose requests wait at a gate in the simulator, so it is surely in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pandas as pd
import pytest
from aiohttp import web

from llamabatch import SimProfile, SimServer, arun
from llamabatch.cli.commands import main
from llamabatch.sim.formats import SimFormat
from tests.helpers import FAST, prompt_rows, write_jsonl

pytestmark = pytest.mark.anyio
RUBRIC = "Full marks for a short answer."


class GatedSim(SimServer):
    """A simulator whose chat requests wait while `gate` is clear."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.gate.set()

    async def _answer(
        self, request: web.Request, body: dict[str, Any], model: str, fmt: SimFormat
    ) -> web.StreamResponse:
        await self.gate.wait()
        return await super()._answer(request, body, model, fmt)


def write_config(
    tmp_path: Path, base_url: str, *, n: int = 8, rubric: str | None = RUBRIC, name: str = "c.toml"
) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
    models = "".join(
        f"[[models]]\nname = '{m}'\nprovider = 'openai'\nmodel = '{m}'\nbase_url = '{base_url}'\n"
        for m in ("cand", "grader")
    )
    judge = "name = 'graded'\ntype = 'judge'\nmodel = 'grader'\n"
    path = tmp_path / name
    path.write_text(
        f"[run]\ninput = '{prompts}'\noutput = '{tmp_path / 'out'}'\n"
        "[engine]\nconcurrency = 1\ntimeout_s = 30\nmax_retries = 0\n"
        + models
        + (f"[[scorers]]\n{judge}rubric = '{rubric}'\n" if rubric else "")
    )
    return path


async def cli(*args: str, fsize: int | None = None) -> tuple[int, str]:
    """`llamabatch ARGS` in a child process (its files at most `fsize` bytes); code, stderr."""
    setup = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))"
    code = (
        f"{setup if fsize else ''}\nimport sys\nfrom llamabatch.cli.commands import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    done = await anyio.run_process(
        [sys.executable, "-c", code, *args], check=False, env={**os.environ, "COLUMNS": "200"}
    )
    return done.returncode, done.stderr.decode()


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def rows_once_each(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out)
    assert not df.duplicated(["model", "prompt_id", "sample"]).any()
    return df


async def test_case_13_no_second_writer_while_a_run_writes(tmp_path: Path) -> None:
    async with GatedSim(default=FAST) as sim:
        config = write_config(tmp_path, sim.base_url)
        assert (await arun(config, models=["cand"], limit=2)).exit_code == 0
        before = sim.stats.requests  # two rows and their verdicts
        sim.gate.clear()
        async with anyio.create_task_group() as tg:
            results: dict[str, Any] = {}

            async def first() -> None:
                results["first"] = await arun(config, models=["cand"])

            tg.start_soon(first)
            await sim.wait_for_requests(before + 1)  # the run is in flight, its request held
            for name, args in {
                "run": ("run", "-q", str(config), "--models", "cand"),
                "force": ("run", "-q", str(config), "--no-resume", "--force"),
                "score": ("score", str(tmp_path / "out")),
            }.items():
                results[name] = await cli(*args)
            assert sim.stats.requests == before + 1  # nothing was sent by the refused
            sim.gate.set()
    for name in ("run", "force", "score"):
        code, err = results[name]
        assert code == 2 and "is in use by llamabatch run (pid" in one_line(err), (name, err)
    assert results["first"].exit_code == 0
    df = rows_once_each(tmp_path / "out")
    assert len(df) == 8 and (df["status"] == "ok").all()  # --force deleted nothing
    assert df["score_graded"].notna().all() or df["verdict_graded"].notna().all()


async def test_case_13_no_run_while_score_rescores(tmp_path: Path) -> None:
    async with GatedSim(default=FAST) as sim:
        config = write_config(tmp_path, sim.base_url, n=3)
        assert (await arun(config, models=["cand"])).exit_code == 0
        before = sim.stats.requests
        # Another rubric: every verdict is asked again, and held at the gate.
        other = write_config(tmp_path, sim.base_url, n=3, rubric="Be strict.", name="o.toml")
        sim.gate.clear()
        async with anyio.create_task_group() as tg:
            results: dict[str, Any] = {}

            async def score() -> None:
                out = str(tmp_path / "out")
                results["score"] = await cli("score", out, "--config", str(other))

            tg.start_soon(score)
            await sim.wait_for_requests(before + 1)  # score is calling the judge
            results["run"] = await cli("run", "-q", str(config), "--models", "cand")
            results["force"] = await cli("run", "-q", str(config), "--no-resume", "--force")
            sim.gate.set()
    for name in ("run", "force"):
        code, err = results[name]
        assert code == 2 and "is in use by llamabatch score (pid" in one_line(err), (name, err)
    assert results["score"][0] != 2, results["score"]
    assert len(rows_once_each(tmp_path / "out")) == 3


@pytest.fixture
def listener() -> Iterator[int]:
    """A listening port standing in for the server; a request would show as a connection."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock.getsockname()[1]
        with pytest.raises(BlockingIOError):
            sock.accept()  # nothing connected


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small file system of its own at `path` (needs root), removed afterwards."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write in: permission bits, or for root a read-only file system."""
    if os.geteuid() != 0:
        path = tmp_path / "ro"
        path.mkdir(mode=0o555)
        yield path
        path.chmod(0o755)
        return
    if shutil.which("mount") is None:
        pytest.skip("root ignores permission bits, and there is no mount to make a read-only fs")
    with tmpfs(tmp_path / "ro", "ro,size=64k") as path:
        yield path


@pytest.mark.parametrize("case", ["a file", "under a file", "read-only"])
def test_case_05_unusable_output_is_one_line_exit_2_nothing_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listener: int, case: str
) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    config = tmp_path / "c.toml"
    with contextlib.ExitStack() as stack:
        output = {
            "a file": lambda: passwd,
            "under a file": lambda: passwd / "out",
            "read-only": lambda: stack.enter_context(read_only_dir(tmp_path)) / "out",
        }[case]()
        config.write_text(
            f"[run]\ninput = '{write_jsonl(tmp_path / 'p.jsonl', prompt_rows(2))}'\n"
            f"output = '{output}'\n[[models]]\nname = 'm'\nprovider = 'openai'\n"
            f"base_url = 'http://127.0.0.1:{listener}/v1'\n"
        )
        code = main(["run", str(config)])
        err = one_line(capsys.readouterr().err)
        assert code == 2 and f"output {output}" in err and "[run] output, or --output" in err
        assert not output.exists() or output == passwd
    expected = {"a file": "is not a directory", "under a file": f"{passwd} is not a directory"}
    assert expected.get(case, "cannot write in") in err
    assert passwd.read_text() == "root:x:0:0::/root:/bin/sh\n"


@pytest.mark.parametrize("disk", ["file size limit", "small tmpfs"])
async def test_case_05_a_full_disk_stops_the_run_and_resume_completes_it(
    tmp_path: Path, disk: str
) -> None:
    profile = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=60, jitter=0.0)
    n = 120
    with contextlib.ExitStack() as stack:
        if disk == "small tmpfs":
            if os.geteuid() != 0:
                pytest.skip("mounting a tmpfs needs root; the file size limit case runs instead")
            stack.enter_context(tmpfs(tmp_path / "disk", "size=96k"))
            home = tmp_path / "disk"
        else:
            home = tmp_path
        async with SimServer(default=profile) as sim:
            config = write_config(home, sim.base_url, n=n, rubric=None)
            config.write_text(config.read_text().replace("concurrency = 1", "concurrency = 4"))
            args = ("run", "-q", str(config), "--models", "cand")
            code, err = await cli(*args, fsize=48 * 1024 if disk == "file size limit" else None)
            first = sim.stats.requests
            assert code == 2, err
            assert "the run stopped" in one_line(err)
            assert f"resume with: llamabatch run {config} --models cand" in err
            assert ("File too large" if disk == "file size limit" else "No space left") in err
            assert 0 < first < n
            if disk == "small tmpfs":
                subprocess.run(["mount", "-o", "remount,size=16m", str(home)], check=True)
            code, err = await cli(*args)
            assert code == 0, err
            sent = sim.stats.requests
        df = rows_once_each(home / "out")
    assert len(df) == n and (df["status"] == "ok").all()
    assert sent <= n + 4 + 1  # at most the requests in flight when the disk filled, again
