"""Reports and compare over multi-turn runs: rows matched per turn, turns reduced per prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabatch.report import compare
from llamabatch.report.resultset import load_results
from llamabatch.report.tables import build_report
from tests.evalhelpers import eval_run
from tests.helpers import ROOT

pytestmark = pytest.mark.anyio
DATA = ROOT / "datasets/multiturn.jsonl"
SCORERS = [{"name": "exact", "type": "exact", "ignore_punctuation": True}]


async def test_report_and_compare_multiturn_runs(tmp_path: Path) -> None:
    base = await eval_run(tmp_path / "base", DATA, {"a": 1.0, "b": 0.5}, scorers=SCORERS)
    cand = await eval_run(tmp_path / "cand", DATA, {"a": 0.0, "b": 0.5}, scorers=SCORERS)
    report = build_report(load_results([base]))
    assert report.scores["exact"]["a"].value == 1.0 and report.scores["exact"]["a"].n == 20
    assert 0.0 < report.scores["exact"]["b"].value < 1.0
    result = compare(base, cand)
    assert result.matched == {"a": 40, "b": 40}  # 20 conversations x 2 turns
    score = next(r for r in result.rules if r.model == "a" and r.rule == "score:exact")
    assert score.regressed and score.baseline == 1.0 and score.candidate < 0.1
    assert not next(r for r in result.rules if r.model == "b" and r.rule == "score:exact").regressed
