"""A 307/308 redirect (a moved gateway) is followed with the request body, and logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp import web

from llamabatch import SimServer, arun
from tests.helpers import FAST, sim_config

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("status", [307, 308])
async def test_redirected_requests_are_followed_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    async with SimServer(default=FAST) as sim:

        async def moved(request: web.Request) -> web.Response:
            target = f"{sim.base_url}/chat/completions"
            return web.Response(status=status, headers={"Location": target})

        app = web.Application()
        app.router.add_post("/old/v1/chat/completions", moved)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            with caplog.at_level(logging.INFO, logger="llamabatch.wire.transport"):
                config = sim_config(tmp_path, f"http://127.0.0.1:{port}/old/v1", n_prompts=2)
                result = await arun(config)
        finally:
            await runner.cleanup()
    df = result.dataframe()
    assert (df["status"] == "ok").all() and (df["attempts"] == 1).all()
    assert sim.stats.requests == 2 and (df["completion_tokens"] > 0).all()
    assert sum("redirected to" in r.getMessage() for r in caplog.records) == 2
