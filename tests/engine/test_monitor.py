"""The client watches itself: a busy event loop must never look like a clean run."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from llamabatch import SimServer, arun
from llamabatch.errors import RequestError
from llamabatch.report.resultset import load_results
from llamabatch.report.tables import build_report, render_markdown
from llamabatch.results import read_manifest
from tests.helpers import FAST, sim_config

pytestmark = pytest.mark.anyio


class BlockingObserver:
    """Blocks the event loop on every row, as a slow progress hook or a saturated CPU would."""

    def on_start(self, pending: int) -> None:
        pass

    def on_row(self, row: Mapping[str, Any]) -> None:
        time.sleep(0.03)

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None:
        pass


async def test_a_blocked_loop_is_flagged_in_manifest_and_report(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=40, engine={"concurrency": 4})
        result = await arun(config, observer=BlockingObserver())
    manifest = read_manifest(config.output)
    assert manifest is not None
    client = manifest["client"]
    assert client["client_bound"] and client["loop_lag_p99_ms"] > 10
    assert result.client["client_bound"]
    markdown = render_markdown(build_report(load_results([config.output])))
    assert "the client was the bottleneck" in markdown


async def test_the_manifest_records_the_clients_own_costs(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=5)
        await arun(config)
    client = (read_manifest(config.output) or {})["client"]
    assert client["cpu_s"] > 0 and client["wall_s"] > 0 and client["max_rss_mb"] > 10
    assert {"loop_lag_p50_ms", "loop_lag_p99_ms", "cpu_share"} <= set(client)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's VmHWM")
def test_peak_memory_is_the_process_own_not_its_parents() -> None:
    ballast = b"x" * (200 * 2**20)  # resident in this process when the child is forked
    code = "from llamabatch.engine.monitor import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(ballast) and 0 < float(out.stdout) < 150  # ru_maxrss would say over 200 MB
