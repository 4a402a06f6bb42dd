"""The command line: exit codes, output, and the quickstart config as shipped."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from llamabatch.cli.commands import main
from llamabatch.results import COLUMNS
from tests.helpers import ROOT


def fast_quickstart(tmp_path: Path) -> Path:
    """The shipped quickstart config with the simulator sped up (same models and prompts)."""
    text = (ROOT / "configs/quickstart.toml").read_text()
    text = text.replace(
        'input  = "datasets/quickstart.jsonl"', f'input = "{ROOT}/datasets/quickstart.jsonl"'
    )
    text = text.replace('output = "results/quickstart"', f'output = "{tmp_path}/out"')
    text = re.sub(
        r'(?m)^provider\s*= "sim"$',
        'provider = "sim"\nsim = { ttft_s = 0.0, tokens_per_s = 0.0 }',
        text,
    )
    path = tmp_path / "quick.toml"
    path.write_text(text)
    return path


def test_run_quickstart_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fast_quickstart(tmp_path))]) == 0
    out = capsys.readouterr().out
    for name in ("maverick", "scout", "llama-3.3-70b", "TTFT p50", "latency p90", "output tok/s"):
        assert name in out
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == 120 and (df["status"] == "ok").all()
    assert set(COLUMNS) <= set(df.columns)
    assert df["ttft_s"].notna().all() and df["completion_tokens"].notna().all()


def test_run_subset_with_overrides(tmp_path: Path) -> None:
    config = fast_quickstart(tmp_path)
    code = main(
        ["run", str(config), "--limit", "3", "--models", "scout", "-o", str(tmp_path / "o2"), "-q"]
    )
    assert code == 0
    df = pd.read_parquet(tmp_path / "o2")
    assert len(df) == 3 and set(df["model"]) == {"scout"}


def test_no_resume_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fast_quickstart(tmp_path)
    assert main(["run", str(config), "--limit", "2", "-q"]) == 0
    assert main(["run", str(config), "--limit", "2", "-q", "--no-resume"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["run", str(config), "--limit", "1", "-q", "--no-resume", "--force"]) == 0
    assert len(pd.read_parquet(tmp_path / "out")) == 3


def test_row_failures_exit_3(tmp_path: Path) -> None:
    config = fast_quickstart(tmp_path)
    text = config.read_text().replace("tokens_per_s = 0.0", "tokens_per_s = 0.0, error_rate = 1.0")
    text = text.replace("max_retries = 3", "max_retries = 0")
    config.write_text(text)
    assert main(["run", str(config), "--limit", "1", "-q"]) == 3


def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[run]\ninput = "x.jsonl"\n[[models]]\nname = "a"\nprovider = "sim"\nspeed = 3\n'
    )
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"llamabatch: error: {config}: unknown key models[0].speed"


def test_invalid_prompts_exit_2_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    config = tmp_path / "c.toml"
    config.write_text(
        f'[run]\ninput = "{prompts}"\noutput = "{tmp_path}/out"\n'
        '[[models]]\nname = "a"\nprovider = "sim"\n'
    )
    assert main(["run", str(config)]) == 2
    assert f"{prompts}:2: duplicate id 'a'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "datasets/quickstart.jsonl")]) == 0
    assert "40 valid" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    shutil.copy(ROOT / "datasets/quickstart.jsonl", bad)
    with bad.open("a") as fh:
        fh.write("{oops\n")
    assert main(["validate", str(bad)]) == 2
    assert f"{bad}:41: invalid JSON" in capsys.readouterr().err


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("run", "validate", "sim"))
