"""Issue #14, leaks and injection (cases 7-12): no key in any file or stream, no broken output.

Each test runs the real command line in a child process against `tests/hostile.py`,
then greps every file of the output directory (Parquet read back as text) and
everything the process printed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import anyio
import pandas as pd
import pytest

from llamabatch.redact import Redactor, redacted_logs
from tests.evalhelpers import eval_run
from tests.helpers import write_jsonl
from tests.hostile import HostileServer

pytestmark = pytest.mark.anyio

KEY = "sk-live-0123456789abcdef"
ORG_KEY = "org-secret-fedcba9876543210"


def write_config(tmp_path: Path, base_url: str, **model: str) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": "hi"} for i in range(3)])
    settings = "".join(f"{k} = {json.dumps(v)}\n" for k, v in model.items())
    config = tmp_path / "c.toml"
    config.write_text(
        f"[run]\ninput = '{prompts}'\noutput = '{tmp_path / 'out'}'\n"
        "[engine]\ntimeout_s = 10\nmax_retries = 0\n"
        f"[[models]]\nname = 'm1'\nprovider = 'openai'\nbase_url = '{base_url}'\n"
        "api_key_env = 'TEST_KEY'\nheaders = { 'X-Org' = '${ORG_KEY}' }\n" + settings
    )
    return config


async def cli(*args: str) -> tuple[int, str]:
    """Run `llamabatch ARGS` in a child process; its exit code and all it printed."""
    env = {**os.environ, "TEST_KEY": KEY, "ORG_KEY": ORG_KEY, "COLUMNS": "200"}
    done = await anyio.run_process(
        [sys.executable, "-m", "llamabatch.cli", *args], env=env, check=False
    )
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


def everything_written(output: Path) -> str:
    """Every file under `output` as text, Parquet parts read back cell by cell."""
    texts = []
    for path in sorted(output.rglob("*")):
        if path.suffix == ".parquet":
            texts.append(pd.read_parquet(path).astype(str).to_csv())
        elif path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


async def test_case_07_08_a_key_in_headers_or_echoed_back_is_nowhere(tmp_path: Path) -> None:
    async with HostileServer() as server:
        config = write_config(tmp_path, server.base_url("echo-key"))
        code, printed = await cli("-v", "run", str(config))
        check_code, check_printed = await cli("check", str(config))
    assert code == 0 and check_code == 0, printed + check_printed
    assert server.seen[0][3] == f"Bearer {KEY}"  # the key was sent...
    written = everything_written(tmp_path / "out")
    for secret in (KEY, ORG_KEY):  # ...and appears in no file and no stream
        assert secret not in written and secret not in printed + check_printed
    df = pd.read_parquet(tmp_path / "out")
    assert (df["output_text"] == "you sent Bearer *** ***").all()
    assert df["notes"].str.contains("known secret").all()
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["config"]["models"][0]["headers"]["X-Org"] == "***"


def test_case_09_child_logger_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        with redacted_logs(Redactor([KEY])):
            logging.getLogger("llamabatch.wire.transport").info("sent %s", KEY)
            try:
                raise ValueError(f"bad key {KEY}")
            except ValueError:
                logging.getLogger("aiohttp.client").exception("failed")
        text = caplog.text
        logging.getLogger("llamabatch.x").info("after %s", KEY)  # the factory is gone now
    assert KEY not in text and "sent ***" in text and "bad key ***" in text
    assert caplog.records[-1].getMessage() == f"after {KEY}"


HOSTILE_IDS = ["plain", "pipe|id", "tick`id", "new\nline", "nul\x00esc\x1b[2J\x07\x0b\x0c"]


async def test_case_10_11_12_compare_output_survives_hostile_prompt_ids(tmp_path: Path) -> None:
    rows = [
        {"id": pid, "prompt": f"What is {i} + 1?", "expected": str(i + 1)}
        for i, pid in enumerate(HOSTILE_IDS)
    ]
    prompts = write_jsonl(tmp_path / "p.jsonl", [json.dumps(r) for r in rows])
    base = await eval_run(tmp_path / "base", prompts, {"a": 1.0})
    cand = await eval_run(tmp_path / "cand", prompts, {"a": 0.0})
    junit, md = tmp_path / "junit.xml", tmp_path / "summary.md"
    code, printed = await cli(
        "compare",
        str(base),
        str(cand),
        "--max-flips",
        "0",
        "--junit",
        str(junit),
        "--markdown",
        str(md),
        "--no-latency",
    )
    assert code == 1, printed
    tree = ET.parse(junit)  # well-formed XML 1.0
    names = [c.get("name", "") for c in tree.iter("testcase")]
    assert sum(n.startswith("flip ") for n in names) == len(HOSTILE_IDS)
    assert any("\\x1b[2J" in n for n in names)
    markdown = md.read_text()
    flips = markdown.split("### Prompts that flipped")[1].split("\n\n")[1].splitlines()
    assert len(flips) == 2 + len(HOSTILE_IDS)  # header, rule, one line per prompt
    for line in flips:
        assert line.replace("\\\\", "").replace("\\|", "").count("|") == 6, line
    for text in (markdown, printed):
        assert "\x1b" not in text and "\x00" not in text and "\x07" not in text


async def test_case_12_check_prints_no_escape_sequences(tmp_path: Path) -> None:
    async with HostileServer() as server:
        config = write_config(tmp_path, server.base_url("ansi"))
        code, printed = await cli("check", str(config))
        run_code, run_printed = await cli("run", str(config))
    assert code == 1 and "bad request" in printed
    assert run_code == 3
    for text in (printed, run_printed):
        assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J" in printed
