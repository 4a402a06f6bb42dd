"""The benchmark harness runs end to end (a --quick smoke; no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_benchmark_writes_every_section(tmp_path: Path) -> None:
    report = tmp_path / "RESULTS.md"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/run.py"), "--quick", "-o", str(report)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    text = report.read_text()
    for title in (
        "CPU per streamed request",
        "CPU per streamed response, one write per event",
        "TTFT honesty under concurrency",
        "Memory and resume start-up",
        "Throughput under a server-side rate limit",
        "Raw chunk times: cost and accuracy",
        "Worker processes: responses/s and CPU per response",
        "A rate limit shared by processes",
    ):
        assert f"## {title}" in text
    ratio = re.search(r"llamabatch / lean CPU ratio, side by side: ([\d.]+)", text)
    assert ratio is not None and float(ratio.group(1)) > 0
    assert re.search(r"\| 256 \| \*\*llamabatch\*\* \| [\d.]+ /", text)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_view_rows_benchmark_smoke() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/view_rows.py"), "--rows", "6000", "--repeats", "2"],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    rows = re.findall(r"^\| ([^|]+) \| ([\d.]+) \| ([\d.]+) \|$", result.stdout, re.MULTILINE)
    assert [label for label, _, _ in rows] == [
        "first page",
        "model + status filter",
        "score filter",
        "page 1,000 (row 50,001)",
        "search in outputs",
    ]
    assert re.search(r"Server peak RSS \(VmHWM\) after the rows pages: \d+ MB", result.stdout)
    assert re.search(r"Run page \(the report of the whole run, cold\): [\d.]+ s", result.stdout)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_batch_mode_benchmark_smoke() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/batch_mode.py"), "--prompts", "300"],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "'ok': 300" in result.stdout and "peak memory of the run" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_embeddings_memory_benchmark_smoke() -> None:
    argv = ["--inputs", "3000", "--dims", "64", "--every-s", "0.5"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/embed_memory.py"), *argv],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "Exit code 0" in result.stdout and "'ok': 3000" in result.stdout
    assert re.search(r"Peak RSS of the run \(VmHWM\): \*\*\d+ MB\*\*", result.stdout)


def test_a_partial_run_keeps_the_header_notes_of_the_sections_it_kept(tmp_path: Path) -> None:
    from benchmarks.run import SECTIONS, merge_results

    (cpu_title, _), (ttft_title, _) = SECTIONS["cpu"], SECTIONS["ttft"]
    report = tmp_path / "RESULTS.md"
    report.write_text(
        "# llamabatch benchmarks\n\n- CPU: old cpu\n- Python 3.10\n"
        "- 2026-11-30: `python benchmarks/run.py` (the first run)\n"
        f"\n## {cpu_title}\n\nold cpu table\n\n## {ttft_title}\n\nold ttft table\n"
    )
    header = ["- CPU: new cpu", "- Python 3.11", "- 2026-12-02: `--only ttft`"]
    partial = merge_results(report, header, {ttft_title: ["new ttft table"]}, partial=True)
    assert partial.splitlines()[2:6] == [
        "- CPU: new cpu",
        "- Python 3.11",
        "- 2026-11-30: `python benchmarks/run.py` (the first run)",
        "- 2026-12-02: `--only ttft`",
    ]
    assert "old cpu table" in partial and "new ttft table" in partial
    assert "old ttft table" not in partial
    whole = merge_results(report, header, {ttft_title: ["new ttft table"]}, partial=False)
    assert "the first run" not in whole and "- CPU: old cpu" not in whole
