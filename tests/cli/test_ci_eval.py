"""The shipped CI path: configs/ci-eval.toml against the committed baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamabatch.cli.commands import main
from llamabatch.config.load import load_config
from llamabatch.results import read_manifest
from tests.helpers import ROOT

BASELINE = Path("results/baseline-ci-eval")
pytestmark = pytest.mark.slow


def test_baseline_was_made_by_the_shipped_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    manifest = read_manifest(BASELINE)
    assert manifest is not None and manifest["status"] == "finished"
    assert manifest["counts"]["ok"] == 126
    shipped = load_config("configs/ci-eval.toml").snapshot()
    for key in ("input", "models", "scorers", "defaults", "repeats"):
        recorded = manifest["config"][key]
        assert _as_recorded(shipped[key], recorded) == recorded, key


def _as_recorded(shipped: Any, recorded: Any) -> Any:
    """`shipped` cut to the settings the baseline's manifest records (newer code adds some)."""
    if isinstance(shipped, dict) and isinstance(recorded, dict):
        return {k: _as_recorded(shipped.get(k), v) for k, v in recorded.items()}
    if isinstance(shipped, list) and isinstance(recorded, list) and len(shipped) == len(recorded):
        return [_as_recorded(s, r) for s, r in zip(shipped, recorded, strict=True)]
    return shipped


def test_an_unchanged_checkout_reports_no_regression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    new = tmp_path / "ci-eval"
    assert main(["run", "configs/ci-eval.toml", "-o", str(new), "-q"]) == 0
    junit = tmp_path / "junit.xml"
    assert main(["compare", str(BASELINE), str(new), "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "✅ no regression" in out and "No prompt flipped" in out
    assert 'failures="0"' in junit.read_text()


def test_a_worse_model_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    text = Path("configs/ci-eval.toml").read_text()
    worse = text.replace("accuracy = 0.9 }", "accuracy = 0.4 }")
    assert worse != text
    config = tmp_path / "worse.toml"
    config.write_text(worse)
    new = tmp_path / "worse"
    assert main(["run", str(config), "-o", str(new), "-q"]) == 0
    assert main(["compare", str(BASELINE), str(new)]) == 1
    out = capsys.readouterr().out
    assert "- maverick score:exact:" in out and "### Prompts that flipped" in out
