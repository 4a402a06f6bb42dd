"""`llamabatch view` in a real browser: Playwright driving Debian's chromium.

Playwright's own browser download cannot be reached from CI machines, so the
browser is /usr/bin/chromium (installed by .ci/setup-browser). Screenshots of
every page go to test-artifacts/view/ (docs/viewer.png in the README is one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llamabatch.report.resultset import read_results_dir
from llamabatch.results import read_manifest, write_manifest
from llamabatch.view.server import CSP
from tests.helpers import ROOT
from tests.view.test_server import XSS, edit_rows

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "view"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = "qa-capital-japan"  # the prompt whose output is made markup

pytestmark = pytest.mark.slow


def _browser_or_skip() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/setup-browser should have installed it")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")


def _run(config: str, output: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "llamabatch.cli", "run", config, "-o", str(output), "-q"],
        cwd=ROOT,
        check=True,
        timeout=300,
    )


def _later(run: Path, minutes: int) -> None:
    """Copies of a run are later runs of the same config (for the trend)."""
    manifest = read_manifest(run) or {}
    stamp = pd.Timestamp(manifest["started_at"]) + pd.Timedelta(minutes=minutes)
    write_manifest(run, {**manifest, "started_at": stamp.isoformat()})


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _browser_or_skip()
    root = tmp_path_factory.mktemp("view") / "results"
    _run("configs/quickstart.toml", root / "quickstart")
    shutil.copytree(ROOT / "results" / "baseline-ci-eval", root / "baseline-ci-eval")
    _run("configs/ci-eval.toml", root / "ci-eval")
    _later(root / "ci-eval", 1)
    shutil.copytree(root / "ci-eval", root / "ci-eval-2")
    _later(root / "ci-eval-2", 2)
    shutil.copytree(root / "ci-eval", root / "ci-eval-regressed")
    _later(root / "ci-eval-regressed", 3)
    edit_rows(
        root / "ci-eval-regressed",
        regressed(root),
        "maverick",
        output_text="-1",
        score_exact=0.0,
        score_math=0.0,
    )
    edit_rows(root / "ci-eval-regressed", HOSTILE, "scout", output_text=XSS)
    return root


def regressed(root: Path) -> str:
    """The prompt made to fail in the candidate: the first math prompt maverick got right."""
    frame = read_results_dir(root / "ci-eval")
    right = frame[(frame["model"] == "maverick") & (frame["score_math"] == 1.0)]
    return str(sorted(right["prompt_id"])[0])


@pytest.fixture(scope="module")
def server(results: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llamabatch.cli",
            "view",
            str(results),
            "--port",
            "0",
            "--no-browser",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("llamabatch view: serving http://127.0.0.1:"), line
        yield line.split()[3]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    yield page
    context.close()


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def test_runs_page_lists_both_runs(page: Any, server: str) -> None:
    response = page.goto(server)
    assert response.headers["content-security-policy"] == CSP
    links = page.locator("#runs tbody tr td:nth-child(2) a").all_inner_texts()
    assert {"quickstart", "ci-eval", "baseline-ci-eval"} <= set(links)
    shot(page, "runs")


def test_rows_filter_by_model_and_status(page: Any, server: str, results: Path) -> None:
    frame = read_results_dir(results / "ci-eval")
    expected = frame[(frame["model"] == "scout") & (frame["status"] == "ok")]
    page.goto(server + "run/ci-eval/rows")
    page.select_option("select[name=model]", "scout")
    page.select_option("select[name=status]", "ok")
    page.click("#filters button")
    page.wait_for_url("**/rows?*model=scout*")
    models = page.locator("#rows tbody tr td:nth-child(1)").all_inner_texts()
    assert set(models) == {"scout"} and len(models) == min(len(expected), 50)
    assert f"of {len(expected)}" in page.inner_text("#shown")
    shot(page, "rows")


def test_search_finds_a_known_output(page: Any, server: str, results: Path) -> None:
    frame = read_results_dir(results / "quickstart")
    known = frame.sort_values(["prompt_id", "model"]).iloc[0]
    words = str(known["output_text"]).split()
    needle = " ".join(words[2:5])
    page.goto(server + "run/quickstart/rows")
    page.fill("input[name=q]", needle)
    page.click("#filters button")
    page.wait_for_url("**/rows?*q=*")
    ids = page.locator("#rows tbody tr td:nth-child(2)").all_inner_texts()
    assert known["prompt_id"] in ids
    texts = page.locator("#rows td.text").all_inner_texts()
    assert all(needle.lower() in t.lower() for t in texts) or known["prompt_id"] in ids


def test_prompt_page_shows_three_models_side_by_side(page: Any, server: str) -> None:
    page.goto(server + "run/quickstart/prompt?id=capital-france")
    cells = page.locator("#outputs .cell")
    assert cells.count() == 3
    boxes = [cells.nth(i).bounding_box() for i in range(3)]
    assert len({round(b["y"]) for b in boxes}) == 1  # one row
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]
    models = [cells.nth(i).get_attribute("data-model") for i in range(3)]
    assert models == ["maverick", "scout", "llama-3.3-70b"]
    assert "capital of France" in page.inner_text("pre.prompt-text")
    shot(page, "prompt")


def test_compare_lists_the_regression_first(page: Any, server: str, results: Path) -> None:
    page.goto(server + "compare?a=ci-eval&b=ci-eval-regressed")
    first = page.locator("#regressions .regression").first
    assert regressed(results) in first.locator("> h3").inner_text()
    (head,) = page.locator("#regressions .regression > h3").all_inner_texts()
    assert "exact 1.000 → 0.000, math 1.000 → 0.000" in head
    text = first.inner_text()
    assert "before (ci-eval)" in text and "after (ci-eval-regressed)" in text
    shot(page, "compare")


def test_hostile_output_renders_as_text(page: Any, server: str) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    response = page.goto(server + f"run/ci-eval-regressed/prompt?id={HOSTILE}")
    assert response.headers["content-security-policy"] == CSP
    scout = page.locator('#outputs .cell[data-model="scout"] pre.output')
    assert scout.inner_text() == XSS  # shown as the characters it is
    assert page.locator("#outputs img, #outputs script").count() == 0
    # Even markup injected into the page by script cannot run inline handlers: the CSP holds.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=alert(2)>')")
    page.wait_for_timeout(300)  # an onerror handler would fire within this; none may
    assert page.dialogs == []  # type: ignore[attr-defined]
    shot(page, "hostile")


def test_report_of_four_runs_draws_pareto_and_trend(page: Any, server: str) -> None:
    runs = ["baseline-ci-eval", "ci-eval", "ci-eval-2", "ci-eval-regressed"]
    page.goto(server + "report?" + "&".join(f"run={r}" for r in runs))
    for chart in ("chart-pareto", "chart-trend", "chart-cost"):
        loaded = page.eval_on_selector(f"#{chart}", "img => img.complete && img.naturalWidth")
        assert loaded > 0, chart
    trend = page.inner_text("#trend + .scroll")
    assert "baseline-ci-eval (baseline)" in trend
    shot(page, "report")


def test_run_page_and_html_report_fit_1400px(
    page: Any, server: str, results: Path, tmp_path: Path
) -> None:
    page.goto(server + "run/ci-eval")
    assert page.locator("#chart-latency").count() == 1
    shot(page, "run")
    shot(page, "run-top", full_page=False)  # the README's docs/viewer.png
    out = tmp_path / "report.html"
    runs = [
        str(results / r) for r in ("baseline-ci-eval", "ci-eval", "ci-eval-2", "ci-eval-regressed")
    ]
    subprocess.run(
        [sys.executable, "-m", "llamabatch.cli", "report", *runs, "-o", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    page.goto(out.as_uri())
    for key in ("models", "volume"):
        right = page.eval_on_selector(
            f"#{key} + .scroll table", "t => t.getBoundingClientRect().right"
        )
        assert right <= 1400, key
    assert "$ per 1,000 prompts" in page.inner_text("#volume + .scroll")
    assert page.locator("#chart-pareto svg").count() == 1
    assert page.locator("#chart-trend svg").count() == 1
    shot(page, "html-report")
    summary = {"pages": sorted(p.name for p in ARTIFACTS.glob("*.png"))}
    (ARTIFACTS / "index.json").write_text(json.dumps(summary))
