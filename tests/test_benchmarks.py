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
    ):
        assert f"## {title}" in text
    ratio = re.search(r"llamabatch / lean CPU ratio, side by side: ([\d.]+)", text)
    assert ratio is not None and float(ratio.group(1)) > 0
    assert re.search(r"\| 256 \| \*\*llamabatch\*\* \| [\d.]+ /", text)
