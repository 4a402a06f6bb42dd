"""The viewer's HTTP answers: pages, filters, search, compare, live rows, and its safety."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from aiohttp.test_utils import TestClient, TestServer

from llamabatch.results import part_files, read_manifest, write_manifest
from llamabatch.view.catalog import Catalog
from llamabatch.view.server import CSP, build_app
from tests.evalhelpers import eval_prompts, eval_run

pytestmark = pytest.mark.anyio

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def edit_rows(run: Path, prompt_id: str, model: str, **values: object) -> None:
    """Overwrite some columns of one stored row (a deliberate regression, a hostile output)."""
    for part in part_files(run):
        table = pq.read_table(part)
        hit = pc.and_(pc.equal(table["prompt_id"], prompt_id), pc.equal(table["model"], model))
        if not pc.any(hit).as_py():
            continue
        for column, value in values.items():
            i = table.schema.get_field_index(column)
            replaced = pc.if_else(hit, pa.scalar(value, table.schema.field(i).type), table[column])
            table = table.set_column(i, table.schema.field(i), replaced)
        pq.write_table(table, part)


@pytest.fixture
async def runs(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    prompts = eval_prompts(tmp_path / "p.jsonl", 12)
    base = await eval_run(root / "base", prompts, {"good": 1.0, "meh": 0.5}, name="nightly")
    shutil.copytree(base, root / "cand")
    edit_rows(root / "cand", "q03", "good", output_text="wrong", score_exact=0.0)
    edit_rows(root / "cand", "q05", "meh", output_text=XSS)
    return root


@pytest.fixture
async def client(runs: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(TestServer(build_app(Catalog([runs])))) as c:
        yield c


async def text(client: TestClient, path: str, status: int = 200) -> str:  # type: ignore[type-arg]
    response = await client.get(path)
    body = await response.text()
    assert response.status == status, body
    return body


async def test_runs_page_lists_runs_with_counts(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/")
    assert response.headers["Content-Security-Policy"] == CSP
    body = await response.text()
    assert 'href="/run/base"' in body and 'href="/run/cand"' in body
    assert "<td>24</td>" in body  # rows: 12 prompts x 2 models
    assert "good, meh" in body


async def test_runs_page_marks_a_cost_missing_on_ok_rows(tmp_path: Path) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 4)
    prices = {"m": {"input": 1.0, "output": 1.0}}
    whole = await eval_run(tmp_path / "r" / "whole", prompts, {"m": 1.0}, prices=prices)
    shutil.copytree(whole, tmp_path / "r" / "partial")
    edit_rows(tmp_path / "r" / "partial", "q01", "m", cost_usd=None)  # no count from the server
    async with TestClient(TestServer(build_app(Catalog([tmp_path / "r"])))) as c:
        body = await text(c, "/")
    (row,) = [r for r in body.split("<tr>") if 'href="/run/partial"' in r]
    assert "<td>≥ " in row and "(1 rows w/o cost)" in row
    (row,) = [r for r in body.split("<tr>") if 'href="/run/whole"' in r]
    assert "≥" not in row


async def test_rows_filter_by_model_status_and_score(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await text(client, "/run/cand/rows?model=good&status=ok")
    assert body.count('<tr class="">') == 12
    assert "rows 1–12 of 12" in body
    failed = await text(client, "/run/cand/rows?model=good&score=exact&verdict=fail")
    assert "rows 1–1 of 1" in failed and ">q03</a>" in failed


async def test_search_finds_outputs_and_prompt_texts(client: TestClient) -> None:  # type: ignore[type-arg]
    found = await text(client, "/run/cand/rows?q=WRONG")
    assert ">q03</a>" in found and found.count("<tr ") == 1
    by_prompt = await text(client, "/run/cand/rows?q=What+is+7+%2B+1")  # prompt text only
    assert ">q07</a>" in by_prompt and by_prompt.count("<tr ") == 2


async def test_paging_links_keep_the_filters(client: TestClient) -> None:  # type: ignore[type-arg]
    from llamabatch.view import rows

    body = await text(client, "/run/base/rows?model=meh")
    assert rows.PAGE_SIZE > 12 and 'rel="next"' not in body


async def test_prompt_page_shows_outputs_side_by_side(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await text(client, "/run/cand/prompt?id=q05")
    assert body.count('class="cell"') == 2
    assert "[user] What is 5 + 1?" in body and '<span id="expected">6</span>' in body
    assert "<script>alert" not in body and "&lt;script&gt;alert(&quot;x&quot;)" in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


async def test_compare_lists_the_regression_first(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await text(client, "/compare?a=base&b=cand")
    regressions = body[body.index('id="regressions"') : body.index("<h2>Checks")]
    assert "good · <a" in regressions and ">q03</a> · exact 1.000 → 0.000" in regressions
    assert "before (base)" in regressions and "wrong" in regressions


async def test_report_across_runs_and_its_charts(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await text(client, "/report?run=base&run=cand")
    assert 'id="trend"' in body and 'id="chart-trend"' in body
    chart = await client.get("/report/chart/trend.svg?run=base&run=cand")
    assert chart.content_type == "image/svg+xml" and "<svg" in await chart.text()
    run = await text(client, "/run/cand")
    assert 'src="/run/cand/chart/latency.svg"' in run and "Models" in run


async def test_nothing_outside_the_catalog_is_served(client: TestClient, runs: Path) -> None:  # type: ignore[type-arg]
    for path in (
        "/run/..%2F..%2Fetc",
        "/run/%2Fetc%2Fpasswd/rows",
        "/run/nope",
        "/static/..%2F__init__.py",
        "/static/server.py",
        "/run/base/chart/nope.svg",
    ):
        assert (await client.get(path)).status == 404, path
    (runs / "base" / "_manifest.json").write_text(
        json.dumps({**(read_manifest(runs / "base") or {}), "status": "finished"})
    )
    assert (await client.post("/")).status == 405


async def test_foreign_host_names_are_refused(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/", headers={"Host": "attacker.example:80"})
    assert response.status == 403


async def test_a_run_in_progress_shows_its_journal_rows(runs: Path) -> None:
    run = runs / "base"
    table = pq.read_table(part_files(run)[0])
    for part in part_files(run):
        part.unlink()
    manifest = read_manifest(run) or {}
    write_manifest(run, {**manifest, "status": "running"})
    journal = run / "_journal"
    journal.mkdir()
    (journal / "r1.schema").write_bytes(table.schema.serialize().to_pybytes())
    rows = table.to_pylist()
    for row in rows:
        for key in ("started_at", "finished_at", "scheduled_at"):
            if row.get(key) is not None:
                row[key] = int(row[key].timestamp() * 1_000_000)
    segment = journal / "r1-000000.jsonl"
    segment.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows[:5]))
    async with TestClient(TestServer(build_app(Catalog([runs])))) as client:
        page = await text(client, "/run/base/rows")
        assert "rows 1–5 of 5" in page and 'data-poll="/run/base/status"' in page
        before = (await (await client.get("/run/base/status")).json())["signature"]
        with segment.open("ab") as fh:
            fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows[5:]))
        after = await (await client.get("/run/base/status")).json()
        assert after["live"] and after["signature"] != before
        assert "rows 1–24 of 24" in await text(client, "/run/base/rows?fragment=1")
