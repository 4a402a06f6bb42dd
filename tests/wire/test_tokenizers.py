"""Exact token counts from the server's tokenizer when a stream reports no usage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamabatch import SimProfile, SimServer, arun
from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.wire import Response
from llamabatch.wire.tokenizers import TokenCounter, parse_count, server_root, tokenize_request
from tests.helpers import sim_config

NO_USAGE = SimProfile(
    ttft_s=0.0, tokens_per_s=0.0, output_tokens=12, jitter=0.0, stream_usage=False
)
MODEL = ModelConfig(name="m", provider="openai", model="llama-x", base_url="http://h:8000/v1")
MESSAGES = [{"role": "user", "content": "hi there"}]


@pytest.mark.parametrize(
    ("kind", "text", "url", "body"),
    [
        ("llamacpp", "a b", "http://h:8000/tokenize", {"content": "a b"}),
        (
            "vllm",
            "a b",
            "http://h:8000/tokenize",
            {"model": "llama-x", "prompt": "a b", "add_special_tokens": False},
        ),
        (
            "vllm",
            None,
            "http://h:8000/tokenize",
            {"model": "llama-x", "messages": MESSAGES, "add_special_tokens": True},
        ),
        ("llama-cpp-python", "a b", "http://h:8000/extras/tokenize/count", {"input": "a b"}),
    ],
)
def test_golden_tokenize_requests(
    kind: str, text: str | None, url: str, body: dict[str, Any]
) -> None:
    req = tokenize_request(kind, MODEL, "key", text, MESSAGES)
    assert (req.url, req.method, json.loads(req.body)) == (url, "POST", body)
    assert req.headers["Authorization"] == "Bearer key"


def test_server_root_and_counts() -> None:
    assert server_root("http://h:8080/v1") == "http://h:8080"
    assert server_root("http://h:11434") == "http://h:11434"
    assert parse_count(b'{"count": 7, "max_model_len": 10}') == 7
    assert parse_count(b'{"tokens": [1, 2, 3]}') == 3
    with pytest.raises(RequestError):
        parse_count(b'{"detail": "Not Found"}')


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["llamacpp", "vllm", "llama-cpp-python"])
async def test_streams_without_usage_are_counted_by_the_servers_tokenizer(
    tmp_path: Path, kind: str
) -> None:
    async with SimServer(default=NO_USAGE) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=3, model_settings={"tokenize": kind})
        result = await arun(config)
        tokenize_calls = sim.stats.tokenize_requests
    df = result.dataframe()
    assert (df["usage_source"] == "tokenized").all()
    # Exact: the simulator's tokens are words (llama-cpp-python's BOS is not counted).
    assert (df["completion_tokens"] == df["output_text"].str.split().str.len()).all()
    words = df["prompt_id"].map(lambda i: len(f"Question number {i[1:]}?".split()))
    expected_prompt = words + 4 if kind == "vllm" else words  # vLLM applies the chat template
    assert (df["prompt_tokens"] == expected_prompt).all()
    assert tokenize_calls == 6 + (kind == "llama-cpp-python")


@pytest.mark.anyio
async def test_without_a_tokenizer_counts_are_estimated(tmp_path: Path) -> None:
    async with SimServer(default=NO_USAGE) as sim:
        result = await arun(sim_config(tmp_path, sim.base_url, n_prompts=2))
        assert sim.stats.tokenize_requests == 0
    df = result.dataframe()
    assert (df["usage_source"] == "estimated").all() and (df["completion_tokens"] > 0).all()


@pytest.mark.anyio
async def test_usage_reported_by_the_server_needs_no_tokenizer(tmp_path: Path) -> None:
    profile = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=5, jitter=0.0)
    async with SimServer(default=profile) as sim:
        config = sim_config(tmp_path, sim.base_url, model_settings={"tokenize": "llamacpp"})
        result = await arun(config)
        assert sim.stats.tokenize_requests == 0
    assert (result.dataframe()["usage_source"] == "server").all()


class FailingTransport:
    async def fetch(self, request: Any, timeout_s: float) -> tuple[int, bytes]:
        raise RequestError("connection", "refused")


@pytest.mark.anyio
async def test_an_unreachable_tokenizer_leaves_counts_to_estimation() -> None:
    resp = Response()
    resp.text_parts.append("some answer")
    counter = TokenCounter(MODEL, None, "llamacpp")
    await counter.fill(FailingTransport(), resp, MESSAGES)  # type: ignore[arg-type]
    assert resp.completion_tokens is None and resp.usage_source is None
