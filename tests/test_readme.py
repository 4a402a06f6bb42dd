"""The README stays true: its commands are the ones CI runs, its help is the real help."""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

from llamabatch.cli.commands import main
from tests.helpers import ROOT

README = ROOT / "README.md"
HELP_BLOCK = re.compile(r"(<!-- help:(\S+) -->\n```text\n)(.*?)(```\n<!-- /help:\2 -->)", re.DOTALL)


def help_text(command: str) -> str:
    argv = ["--help"] if command == "llamabatch" else [command, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(argv)
    return out.getvalue()


def render(readme: str) -> str:
    return HELP_BLOCK.sub(lambda m: m.group(1) + help_text(m.group(2)) + m.group(4), readme)


def test_help_in_readme_is_the_real_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    readme = README.read_text()
    assert len(HELP_BLOCK.findall(readme)) >= 4
    assert render(readme) == readme, "README help is stale: run `python -m tests.test_readme`"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci/run").read_text().strip().splitlines()[-1]
    assert ci == 'pip install -e ".[dev]" && pytest'
    assert f"&& {ci}\n" in README.read_text()


def test_readme_quickstart_runs_the_quickstart_config() -> None:
    assert "pip install -e . && llamabatch run configs/quickstart.toml" in README.read_text()


if __name__ == "__main__":
    os.environ["COLUMNS"] = "100"
    README.write_text(render(README.read_text()))
