"""`llamabatch score` and `view` on results at an s3:// URI (a real S3 server, moto's)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pandas as pd
import pytest
from aiohttp.test_utils import TestClient, TestServer

from llamabatch.cli import main
from llamabatch.cli.evaluate import results_location
from llamabatch.view.catalog import Catalog
from llamabatch.view.server import build_app
from tests.evalhelpers import eval_prompts, eval_run
from tests.s3server import S3, s3_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    with s3_server(tmp_path, monkeypatch) as server:
        yield server


async def test_score_rescores_results_on_s3(
    tmp_path: Path, s3: S3, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = s3.uri("scored")
    prompts = eval_prompts(tmp_path / "p.jsonl", 12)
    # The command line's own event loop runs in a thread: the test's is running.
    await eval_run(uri, prompts, {"good": 1.0, "bad": 0.0}, scorers=[])  # type: ignore[arg-type]
    assert "score_exact" not in pd.read_parquet(uri).columns
    config = tmp_path / "scorers.toml"
    config.write_text(
        f'[run]\ninput = "{prompts}"\noutput = "{uri}"\n'
        '[[models]]\nname = "good"\nprovider = "openai"\nmodel = "good"\n'
        'base_url = "http://127.0.0.1:9/v1"\n'
        '[[scorers]]\nname = "exact"\ntype = "exact"\n'
    )
    assert await anyio.to_thread.run_sync(main, ["score", uri, "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{uri}: rescored 24 rows")
    rows = pd.read_parquet(uri)
    assert len(rows) == 24
    assert rows.groupby("model")["score_exact"].mean().to_dict() == {"bad": 0.0, "good": 1.0}
    objects = s3.objects()
    manifest = json.loads(objects[f"{s3.bucket}/scored/_manifest.json"])
    assert manifest["rescored_at"] and manifest["config"]["scorers"][0]["name"] == "exact"
    assert f"{s3.bucket}/scored/_lease.json" not in objects  # the lease was released


async def test_score_of_an_empty_uri_says_so(s3: S3, capsys: pytest.CaptureFixture[str]) -> None:
    assert await anyio.to_thread.run_sync(main, ["score", s3.uri("nothing")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (moto's server logs above it)
    assert (
        last
        == f"llamabatch: error: {s3.uri('nothing')}: holds no results (no part-*.parquet files)"
    )


async def test_view_serves_runs_on_s3(tmp_path: Path, s3: S3) -> None:
    prompts = eval_prompts(tmp_path / "p.jsonl", 12)
    for name, accuracy in (("base", 1.0), ("cand", 0.5)):
        await eval_run(s3.uri(name), prompts, {"good": accuracy})  # type: ignore[arg-type]
    roots = [results_location(s3.uri("base")), results_location(s3.uri("cand"))]
    async with TestClient(TestServer(build_app(Catalog(roots)))) as client:
        runs = await (await client.get("/")).text()
        assert 'href="/run/base"' in runs and 'href="/run/cand"' in runs
        assert "<td>12</td>" in runs
        rows = await (await client.get("/run/base/rows?model=good&status=ok")).text()
        assert "rows 1–12 of 12" in rows
        failed = await (await client.get("/run/cand/rows?score=exact&verdict=fail")).text()
        assert "rows 1–" in failed and " of 0" not in failed
        compare = await client.get("/compare?a=base&b=cand")
        assert compare.status == 200 and 'id="regressions"' in await compare.text()
