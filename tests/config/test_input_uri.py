"""A prompt file named by a URI: file:// is read; s3:// and others are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabatch import SimServer, arun, load_config
from llamabatch.cli import main
from llamabatch.errors import ConfigError
from tests.helpers import FAST, prompt_rows, write_jsonl

pytestmark = pytest.mark.anyio


def config_file(tmp_path: Path, source: str, base_url: str = "http://127.0.0.1:9/v1") -> Path:
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\ninput = "{source}"\noutput = "{tmp_path / "out"}"\n'
        f'[[models]]\nname = "m"\nprovider = "openai"\nmodel = "m"\nbase_url = "{base_url}"\n'
    )
    return config


async def test_an_s3_prompt_file_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = config_file(tmp_path, "s3://bucket/sets/p.jsonl?region=x", sim.base_url)
        with pytest.raises(ConfigError) as caught:
            await arun(config)
        assert sim.stats.requests == 0
    message = str(caught.value)
    assert message.startswith(
        f"{config}: run.input s3://bucket/sets/p.jsonl: prompt files are read"
    )
    assert "aws s3 cp s3://bucket/sets/p.jsonl" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


async def test_a_file_uri_prompt_file_is_read(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(3))
    async with SimServer(default=FAST) as sim:
        config = config_file(tmp_path, prompts.as_uri(), sim.base_url)
        assert load_config(config).input == prompts
        assert (await arun(config)).ok == 3


def test_validate_refuses_an_s3_prompt_file_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "s3://bucket/p.jsonl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llamabatch: error: prompt file s3://bucket/p.jsonl: prompt files are")
    assert len(err.splitlines()) == 1


def test_credentials_in_an_s3_prompt_uri_never_reach_the_error(tmp_path: Path) -> None:
    config = config_file(tmp_path, "s3://AKIAEXAMPLE:hunter2secret@bucket/p.jsonl?token=t0k")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert "run.input s3://bucket/p.jsonl: prompt files are read" in message
    assert "hunter2secret" not in message and "AKIAEXAMPLE" not in message and "t0k" not in message
