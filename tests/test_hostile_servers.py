"""Issue #14, misbehaving servers (cases 1-4, 6): runs end, memory stays bounded, rows say why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llamabatch import arun
from tests.helpers import sim_config
from tests.hostile import HostileServer

pytestmark = pytest.mark.anyio


async def run_case(tmp_path: Path, case: str, n: int = 3, **settings: Any) -> pd.DataFrame:
    async with HostileServer() as server:
        config = sim_config(tmp_path, server.base_url(case), n_prompts=n, **settings)
        await arun(config)
    return pd.read_parquet(tmp_path / "out")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("case", ["usage-huge", "usage-negative"])
async def test_case_02_usage_out_of_range_is_estimated_with_a_note(
    tmp_path: Path, case: str, stream: bool
) -> None:
    df = await run_case(tmp_path, case, model_settings={"stream": stream})
    assert (df["status"] == "ok").all() and (df["usage_source"] == "estimated").all()
    assert (df["prompt_tokens"] > 0).all() and (df["completion_tokens"] > 0).all()
    assert df["notes"].str.startswith("server usage out of range").all()
    assert df["notes"].str.contains("1e+30" if case == "usage-huge" else "-853", regex=False).all()
