"""A comparison written for people (Markdown), CI dashboards (JUnit XML) and machines (JSON)."""

from __future__ import annotations

import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from llamabatch.escape import markdown_cell, xml_text
from llamabatch.report.comparison import Comparison, Flip, RuleResult
from llamabatch.results import read_manifest
from llamabatch.results.remote import shown

MAX_FLIPS_SHOWN = 50
_SECONDS_RULES = ("latency_p50", "latency_p90", "ttft_p50", "ttft_p90")


def rule_value(rule: RuleResult, value: float) -> str:
    if math.isnan(value):
        return "-"
    if rule.rule in _SECONDS_RULES:
        return f"{value:.3f}s"
    if rule.rule == "error_rate":
        return f"{value * 100:.1f}%"
    if rule.rule == "flips":
        return f"{value:.0f}"
    return f"{value:.3f}"


def _run_id(path: Path) -> str:
    return str((read_manifest(path) or {}).get("run_id", "?"))


def render_markdown(result: Comparison) -> str:
    """A summary for $GITHUB_STEP_SUMMARY or a PR comment."""
    verdict = "❌ regression" if result.regressed else "✅ no regression"
    regressions = [r for r in result.rules if r.regressed]
    lines = [
        f"## llamabatch compare: {verdict}",
        "",
        f"Baseline `{shown(result.baseline)}` (run {_run_id(result.baseline)}) → "
        f"candidate `{shown(result.candidate)}` (run {_run_id(result.candidate)}).",
        "",
    ]
    if regressions:
        lines.append(f"**{len(regressions)} check(s) regressed:**")
        lines += [
            f"- {markdown_cell(r.model)} {r.rule}: {r.change} (limit: {r.limit})"
            for r in regressions
        ]
        lines.append("")
    lines += ["| model | check | baseline | candidate | change | limit | result |"]
    lines += ["|:---|:---|---:|---:|---:|:---|:---|"]
    for r in result.rules:
        mark = "❌ regressed" if r.regressed else "✅ ok"
        lines.append(
            f"| {markdown_cell(r.model)} | {r.rule} | {rule_value(r, r.baseline)} | "
            f"{rule_value(r, r.candidate)} | "
            f"{r.change} | {r.limit} | {mark} |"
        )
    lines += ["", _coverage(result)]
    lines += _flips_markdown(result.flips)
    if result.notes:
        lines += ["", *[f"- {markdown_cell(note)}" for note in result.notes]]
    lines += [
        "",
        "Scores are means over shared prompts (each prompt's samples reduced first); a score "
        "regresses only when the drop is beyond the limit *and* significant (paired sign-flip "
        "test). Latency and TTFT percentiles are over rows that succeeded in both runs.",
    ]
    return "\n".join(lines) + "\n"


def _coverage(result: Comparison) -> str:
    parts = []
    for model, matched in result.matched.items():
        only_b, only_c = result.unmatched[model]
        text = f"{markdown_cell(model)}: {matched} rows matched"
        if only_b or only_c:
            text += f" ({only_b} only in baseline, {only_c} only in candidate)"
        parts.append(text)
    return "Matched by (model, prompt_id, sample) — " + "; ".join(parts) + "."


def _flips_markdown(flips: list[Flip]) -> list[str]:
    if not flips:
        return ["", "No prompt flipped from pass to fail."]
    lines = ["", f"### Prompts that flipped from pass to fail ({len(flips)})", ""]
    lines += ["| model | score | prompt | baseline | candidate |", "|:---|:---|:---|---:|---:|"]
    for f in flips[:MAX_FLIPS_SHOWN]:
        lines.append(
            f"| {markdown_cell(f.model)} | {markdown_cell(f.score)} | {markdown_cell(f.prompt_id)} "
            f"| {f.baseline:.3f} | {f.candidate:.3f} |"
        )
    if len(flips) > MAX_FLIPS_SHOWN:
        lines.append(f"\n… and {len(flips) - MAX_FLIPS_SHOWN} more (see --json or --junit).")
    return lines


def to_json(result: Comparison) -> dict[str, Any]:
    """Everything the comparison found, as plain data (NaN becomes null)."""
    data = {
        "regression": result.regressed,
        "baseline": {"path": shown(result.baseline), "run_id": _run_id(result.baseline)},
        "candidate": {"path": shown(result.candidate), "run_id": _run_id(result.candidate)},
        "thresholds": dataclasses.asdict(result.thresholds),
        "models": [
            {
                "baseline": old,
                "candidate": new,
                "matched_rows": result.matched[label],
                "only_in_baseline": result.unmatched[label][0],
                "only_in_candidate": result.unmatched[label][1],
            }
            for (old, new), label in zip(result.pairs, result.matched, strict=True)
        ],
        "rules": [dataclasses.asdict(r) for r in result.rules],
        "flips": [dataclasses.asdict(f) for f in result.flips],
        "notes": result.notes,
    }
    cleaned: dict[str, Any] = _no_nan(data)
    return cleaned


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def write_json(result: Comparison, path: Path) -> None:
    path.write_text(json.dumps(to_json(result), indent=2) + "\n", encoding="utf-8")


def junit_tree(result: Comparison) -> ET.ElementTree[ET.Element]:
    """One test suite per model: a test case per rule and per flipped prompt.

    A flipped prompt is a failure only when `max_flips` makes flips a rule and
    the model broke it; otherwise it is reported as skipped, so it shows up on
    dashboards without failing them.
    """
    root = ET.Element("testsuites", name="llamabatch compare")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for model in result.matched:
        suite = ET.SubElement(root, "testsuite", name=f"llamabatch compare {model}")
        rules = [r for r in result.rules if r.model == model]
        for rule in rules:
            _rule_case(suite, model, rule)
        flips_fail = any(r.regressed for r in rules if r.rule == "flips")
        for flip in (f for f in result.flips if f.model == model):
            _flip_case(suite, model, flip, failed=flips_fail)
        cases = suite.findall("testcase")
        counts = {
            "tests": len(cases),
            "failures": sum(c.find("failure") is not None for c in cases),
            "errors": 0,
            "skipped": sum(c.find("skipped") is not None for c in cases),
        }
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", "0")
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", "0")
    _xml_safe(root)
    ET.indent(root)
    return ET.ElementTree(root)


def _xml_safe(root: ET.Element) -> None:
    """Escape what XML 1.0 cannot hold (NUL, ESC, ...) in every name, message and text."""
    for element in root.iter():
        for key, value in element.attrib.items():
            element.set(key, xml_text(value))
        if element.text:
            element.text = xml_text(element.text)


def _rule_case(suite: ET.Element, model: str, rule: RuleResult) -> None:
    case = _case(suite, model, rule.rule)
    message = f"{rule.rule}: {rule.change} (limit: {rule.limit})"
    if rule.regressed:
        ET.SubElement(case, "failure", message=message, type="regression").text = message
    ET.SubElement(case, "system-out").text = (
        f"baseline {rule_value(rule, rule.baseline)}, "
        f"candidate {rule_value(rule, rule.candidate)}; " + message
    )


def _flip_case(suite: ET.Element, model: str, flip: Flip, *, failed: bool) -> None:
    case = _case(suite, model, f"flip {flip.score}: {flip.prompt_id}")
    message = (
        f"prompt {flip.prompt_id} {flip.score}: passed in the baseline ({flip.baseline:.3f}), "
        f"fails in the candidate ({flip.candidate:.3f})"
    )
    if failed:
        ET.SubElement(case, "failure", message=message, type="flip").text = message
    else:
        ET.SubElement(case, "skipped", message=message + " (informational)")


def _case(suite: ET.Element, model: str, name: str) -> ET.Element:
    return ET.SubElement(
        suite, "testcase", classname=f"llamabatch.compare.{model}", name=name, time="0"
    )


def write_junit(result: Comparison, path: Path) -> None:
    junit_tree(result).write(path, encoding="utf-8", xml_declaration=True)
