"""`llamabatch compare`: exit codes on real runs with synthetic regressions, JUnit, JSON, --map."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import junitparser
import pytest

from llamabatch.cli.commands import main
from tests.evalhelpers import eval_prompts, eval_run

pytestmark = pytest.mark.anyio


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    return eval_prompts(tmp_path / "p.jsonl", 30)


def compare(tmp_path: Path, base: Path, cand: Path, *flags: str) -> int:
    return main(
        [
            "compare",
            str(base),
            str(cand),
            "--junit",
            str(tmp_path / "junit.xml"),
            "--json",
            str(tmp_path / "c.json"),
            *flags,
        ]
    )


def findings(tmp_path: Path) -> dict[str, bool]:
    data = json.loads((tmp_path / "c.json").read_text())
    return {f"{r['model']} {r['rule']}": r["regressed"] for r in data["rules"]}


async def test_no_change_is_no_regression(
    tmp_path: Path, prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Realistic latencies (a 0.1 s TTFT); the latency rules run, with limits wide enough
    # that a busy machine's scheduling noise between two identical runs cannot trip them.
    ttft = {"a": 0.1, "b": 0.1}
    base = await eval_run(tmp_path / "base", prompts, {"a": 0.8, "b": 0.6}, ttft_s=ttft)
    cand = await eval_run(tmp_path / "cand", prompts, {"a": 0.8, "b": 0.6}, ttft_s=ttft)
    wide = ("--max-p50-ratio", "3", "--max-p90-ratio", "3", "--min-latency-increase-s", "0.5")
    assert compare(tmp_path, base, cand, *wide) == 0
    out = capsys.readouterr().out
    assert out.startswith("## llamabatch compare: ✅ no regression")
    assert "No prompt flipped from pass to fail." in out
    assert not any(findings(tmp_path).values())
    assert {"a score:exact", "a latency_p50", "b error_rate", "b ttft_p90"} <= set(
        findings(tmp_path)
    )


async def test_quality_regression_exits_1_and_lists_flipped_prompts(
    tmp_path: Path, prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = await eval_run(tmp_path / "base", prompts, {"a": 1.0, "b": 0.8})
    cand = await eval_run(tmp_path / "cand", prompts, {"a": 0.4, "b": 0.8})
    assert compare(tmp_path, base, cand) == 1
    out = capsys.readouterr().out
    assert out.startswith("## llamabatch compare: ❌ regression")
    assert findings(tmp_path)["a score:exact"] and not findings(tmp_path)["b score:exact"]
    data = json.loads((tmp_path / "c.json").read_text())
    (rule,) = [r for r in data["rules"] if r["model"] == "a" and r["rule"] == "score:exact"]
    assert rule["baseline"] == 1.0 and rule["details"]["p_value"] < 0.001
    assert f"- a score:exact: {rule['details']['diff']:+.3f} [" in out
    # Every prompt that got worse went from pass (1.0) to fail (0.0): each is a flip.
    losses = rule["details"]["losses"]
    assert losses > 10 and rule["details"]["wins"] == 0
    assert len(data["flips"]) == losses and all(f["model"] == "a" for f in data["flips"])
    assert f"### Prompts that flipped from pass to fail ({losses})" in out


async def test_a_small_drop_is_not_significant_unless_flips_are_gated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    few = eval_prompts(tmp_path / "few.jsonl", 4)
    base = await eval_run(tmp_path / "base", few, {"a": 1.0})
    cand = await eval_run(tmp_path / "cand", few, {"a": 0.0})
    # All 4 prompts fail now, but 4 pairs cannot reach p < 0.05 (exact p = 2/16). Latency is
    # left out: one scheduling stall among 4 rows of a busy machine moves their p90 x65.
    assert compare(tmp_path, base, cand, "--no-latency") == 0
    data = json.loads((tmp_path / "c.json").read_text())
    (score,) = [r for r in data["rules"] if r["rule"] == "score:exact"]
    assert score["details"]["p_value"] == pytest.approx(0.125) and not score["regressed"]
    assert len(data["flips"]) == 4
    suite = junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    assert (suite.tests, suite.failures, suite.skipped) == (6, 0, 4)
    assert compare(tmp_path, base, cand, "--no-latency", "--max-flips", "0") == 1
    suite = junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    assert (suite.failures, suite.skipped) == (5, 0)


async def test_latency_regression(tmp_path: Path, prompts: Path) -> None:
    base = await eval_run(tmp_path / "base", prompts, {"a": 1.0})
    cand = await eval_run(tmp_path / "cand", prompts, {"a": 1.0}, ttft_s={"a": 0.2})
    assert compare(tmp_path, base, cand) == 1
    found = findings(tmp_path)
    assert found["a latency_p50"] and found["a ttft_p50"] and not found["a score:exact"]
    assert compare(tmp_path, base, cand, "--no-latency") == 0
    assert compare(tmp_path, base, cand, "--max-p50-ratio", "1e9", "--max-p90-ratio", "1e9") == 0


async def test_error_rate_regression(tmp_path: Path, prompts: Path) -> None:
    base = await eval_run(tmp_path / "base", prompts, {"a": 1.0})
    cand = await eval_run(tmp_path / "cand", prompts, {"a": 1.0}, error_rate={"a": 0.5})
    assert compare(tmp_path, base, cand, "--no-latency") == 1
    found = findings(tmp_path)
    assert found["a error_rate"] and not found["a score:exact"]
    assert compare(tmp_path, base, cand, "--no-latency", "--max-error-increase", "1") == 0


async def test_renamed_models_need_map(
    tmp_path: Path, prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = await eval_run(tmp_path / "base", prompts, {"scout": 1.0})
    cand = await eval_run(tmp_path / "cand", prompts, {"scout-v2": 0.3})
    assert compare(tmp_path, base, cand) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("if it was renamed, add --map scout=NEW") and "\n" not in err
    assert compare(tmp_path, base, cand, "--map", "scout=scout-v2") == 1
    assert findings(tmp_path)["scout→scout-v2 score:exact"]
    assert compare(tmp_path, base, cand, "--map", "scout=nobody") == 2
    assert "no model 'nobody' in" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "not a results directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["compare", str(tmp_path)])
    assert info.value.code == 2


async def test_junit_is_well_formed_and_complete(tmp_path: Path, prompts: Path) -> None:
    base = await eval_run(tmp_path / "base", prompts, {"a": 1.0, "b": 1.0})
    cand = await eval_run(tmp_path / "cand", prompts, {"a": 0.5, "b": 1.0})
    assert compare(tmp_path, base, cand, "--no-latency") == 1
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["llamabatch compare a", "llamabatch compare b"]
    for suite in suites:
        cases = suite.findall("testcase")
        assert suite.get("tests") == str(len(cases))
        assert suite.get("failures") == str(sum(c.find("failure") is not None for c in cases))
        assert suite.get("skipped") == str(sum(c.find("skipped") is not None for c in cases))
        for case in cases:
            assert case.get("name") and case.get("classname") and case.get("time") == "0"
    # A JUnit consumer reads the same counts (one case per model x rule, one per flip).
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    flips = json.loads((tmp_path / "c.json").read_text())["flips"]
    assert xml.tests == 2 * 2 + len(flips)
    failed = [
        case.name
        for suite in xml
        for case in suite
        if any(isinstance(r, junitparser.Failure) for r in case.result)
    ]
    assert failed == ["score:exact"]


async def test_markdown_is_appended_to_a_file(tmp_path: Path, prompts: Path) -> None:
    base = await eval_run(tmp_path / "base", prompts, {"a": 1.0})
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    assert main(["compare", str(base), str(base), "--markdown", str(summary)]) == 0
    text = summary.read_text()
    assert text.startswith("# earlier step\n## llamabatch compare: ✅ no regression")
