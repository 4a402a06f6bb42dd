"""A run that says what it is doing: the bar, nothing to do, log lines, the summary."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from llamabatch import RequestError, SimServer, arun
from llamabatch.cli.commands import main
from llamabatch.cli.progress import ProgressBar
from tests.helpers import FAST, ROOT, prompt_rows, sim_config, write_jsonl

FAST_SIM = "sim = { ttft_s = 0.0, tokens_per_s = 0.0 }"


def config_file(tmp_path: Path, n: int, extra_model: str = "") -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
    path = tmp_path / "run.toml"
    path.write_text(
        f'[run]\ninput = "{prompts}"\noutput = "{tmp_path / "out"}"\n'
        f'[[models]]\nname = "m"\nprovider = "sim"\nmodel = "m"\n{FAST_SIM}\n{extra_model}'
    )
    return path


def test_bar_counts_are_the_bar_position() -> None:
    progress = ProgressBar()
    progress.on_start(10)
    statuses = ["ok", "error", "ok", "ok", "error", "ok", "ok"]
    for status in statuses:
        progress.on_row({"status": status, "completion_tokens": 5, "error_type": "server"})
        drawn = str(progress.bar)
        done = int(re.search(r"(\d+)/10", drawn).group(1))  # type: ignore[union-attr]
        ok = int(re.search(r"ok=(\d+)", drawn).group(1))  # type: ignore[union-attr]
        err = int(re.search(r"err=(\d+)", drawn).group(1))  # type: ignore[union-attr]
        assert ok + err == done
    assert "7/10" in drawn and "ok=5, err=2" in drawn
    progress.close()


def test_resume_with_nothing_left_says_so_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, 4)
    assert main(["run", str(config), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"nothing to do: 4 rows already stored in {tmp_path / 'out'}\n"
    assert "req/s" not in captured.err and "0req" not in captured.err  # no empty bar
    assert main(["run", str(config), "-q"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_log_lines_go_above_the_bar_never_onto_it(tmp_path: Path) -> None:
    # The second model's endpoint refuses connections: the engine stops it mid-run
    # with a warning, while the bar is on screen.
    refused = (
        '[[models]]\nname = "down"\nprovider = "openai"\nmodel = "x"\n'
        'base_url = "http://127.0.0.1:9/v1"\n'
    )
    config = config_file(tmp_path, 20, refused)
    argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "--no-check"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    pieces = re.split(r"[\r\n]", done.stderr)
    warning = [p for p in pieces if "down: stopped" in p]
    assert warning and all(p.startswith("WARNING ") for p in warning), done.stderr
    assert any("req/s" in p for p in pieces)  # there was a bar to keep it off


@pytest.mark.slow
def test_summary_of_a_scored_run_shows_score_means_and_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    argv = ["run", "configs/ci-eval.toml", "-o", str(tmp_path / "ci"), "--limit", "8"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    for name in ("exact", "math", "mcq", "qa", "json"):
        assert header.count(name) == 1 and header[header.index(name) + 1] == "mean"
    assert header[-1] == "cost"
    for line in lines[2:5]:
        assert re.search(r"\$\d[\d.e-]*$", line), line
        assert re.search(r"\s[01]\.\d{3}\s", line), line  # a score mean


class Recorder:
    """An observer keeping what the progress bar is told."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.rows = 0

    def on_start(self, pending: int) -> None:
        self.pending.append(pending)

    def on_row(self, row: Mapping[str, Any]) -> None:
        self.rows += 1

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None:
        pass


@pytest.mark.anyio
async def test_the_bar_total_counts_every_turn_of_a_conversation(tmp_path: Path) -> None:
    rows = [
        {"id": f"c{i}", "turns": [f"Q{i}?", "And then?", "Why?"][: 1 + i % 3]} for i in range(6)
    ]
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, prompts=write_jsonl(tmp_path / "c.jsonl", rows))
        seen = Recorder()
        await arun(dataclasses.replace(config, repeats=2), observer=seen)
        assert seen.pending == [2 * (1 + 2 + 3 + 1 + 2 + 3)] and seen.rows == seen.pending[0]
        again = Recorder()
        await arun(dataclasses.replace(config, repeats=3), observer=again)
        assert again.pending == [12] and again.rows == 12  # the third sample of each
