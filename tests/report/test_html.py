"""The HTML report: self-contained, has its charts and side-by-side outputs, renders in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from llamabatch.cli.commands import main
from tests.evalhelpers import eval_prompts, eval_run

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
async def report_html(tmp_path: Path) -> Path:
    prompts = eval_prompts(tmp_path / "p.jsonl", 12)
    # One prompt whose answer is markup, to prove outputs are escaped, not rendered.
    with prompts.open("a") as fh:
        fh.write('{"id": "xss", "prompt": "Markup?", "expected": "<script>alert(1)</script>"}\n')
    out = await eval_run(
        tmp_path / "out", prompts, {"good": 1.0, "bad": 0.3}, error_rate={"bad": 0.2}
    )
    html = tmp_path / "report.html"
    assert main(["report", str(out), "-o", str(html)]) == 0
    return html


@pytest.mark.anyio
async def test_html_is_self_contained_with_charts_and_outputs(report_html: Path) -> None:
    text = report_html.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # Nothing is fetched: no external scripts, styles, images or links.
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text)
    assert "<link" not in text and "<script" not in text
    assert text.count("<svg") == 6  # with the Pareto chart of two scored models
    for title in ("TTFT: cumulative distribution", "Latency: cumulative distribution"):
        assert title in text
    for title in ("output tokens/s (whole run)", "Scores", "Errors by type"):
        assert title in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "grid-template-columns: repeat(2," in text  # both models side by side
    assert "<summary>prompt</summary><pre>[user] What is 3 + 1?</pre>" in text


def test_html_report_of_a_bad_directory_exits_2(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")]) == 2
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
@pytest.mark.anyio
async def test_html_renders_in_chromium(report_html: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/setup-browser should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*base, "--dump-dom", report_html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert dom.count("<svg") == 6 and "Pairwise scores" in dom
    subprocess.run(
        [
            *base,
            "--window-size=1280,2400",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            report_html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    # Charts drew coloured marks (the palette's blue), not just text on white.
    blue = np.array([0x4C, 0x72, 0xB0]) / 255
    assert (np.abs(pixels - blue).max(axis=-1) < 0.05).sum() > 2000
