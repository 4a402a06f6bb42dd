"""Exact token counts from the server's tokenizer when a stream reports no usage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from llamabatch import RunConfig, SimProfile, SimServer, arun
from llamabatch.config import ModelConfig
from llamabatch.errors import RequestError
from llamabatch.prompts import PromptSet
from llamabatch.wire import Response
from llamabatch.wire.openai import OpenAIProvider
from llamabatch.wire.tokenizers import (
    TokenCounter,
    parse_count,
    server_root,
    template_request,
    tokenize_request,
)
from llamabatch.wire.transport import Transport
from tests.helpers import sim_config

NO_USAGE = SimProfile(
    ttft_s=0.0, tokens_per_s=0.0, output_tokens=12, jitter=0.0, stream_usage=False
)
MODEL = ModelConfig(name="m", provider="openai", model="llama-x", base_url="http://h:8000/v1")
MESSAGES = [{"role": "user", "content": "hi there"}]


@pytest.mark.parametrize(
    ("kind", "text", "url", "body"),
    [
        ("llamacpp", "a b", "http://h:8000/tokenize", {"content": "a b", "add_special": False}),
        (
            "vllm",
            "a b",
            "http://h:8000/tokenize",
            {"model": "llama-x", "prompt": "a b", "add_special_tokens": False},
        ),
        # vLLM applies the chat template to messages, with its own default (no extra BOS).
        ("vllm", None, "http://h:8000/tokenize", {"model": "llama-x", "messages": MESSAGES}),
        ("llama-cpp-python", "a b", "http://h:8000/extras/tokenize/count", {"input": "a b"}),
    ],
)
def test_golden_tokenize_requests(
    kind: str, text: str | None, url: str, body: dict[str, Any]
) -> None:
    req = tokenize_request(kind, MODEL, "key", text, MESSAGES if text is None else None)
    assert (req.url, req.method, json.loads(req.body)) == (url, "POST", body)
    assert req.headers["Authorization"] == "Bearer key"


def test_golden_llama_cpp_template_requests() -> None:
    """llama.cpp: render the prompt, then tokenize it as its chat endpoint does (with BOS)."""
    template = template_request(MODEL, None, MESSAGES)
    assert (template.url, json.loads(template.body)) == (
        "http://h:8000/apply-template",
        {"messages": MESSAGES},
    )
    rendered = tokenize_request("llamacpp", MODEL, None, "<s>[user] hi there", rendered=True)
    assert json.loads(rendered.body) == {"content": "<s>[user] hi there", "add_special": True}


def test_server_root_and_counts() -> None:
    assert server_root("http://h:8080/v1") == "http://h:8080"
    assert server_root("http://h:11434") == "http://h:11434"
    assert parse_count(b'{"count": 7, "max_model_len": 10}') == 7
    assert parse_count(b'{"tokens": [1, 2, 3]}') == 3
    with pytest.raises(RequestError):
        parse_count(b'{"detail": "Not Found"}')


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "prompt_source"),
    [("llamacpp", "tokenized"), ("vllm", "tokenized"), ("llama-cpp-python", "estimated")],
)
async def test_streams_without_usage_are_counted_by_the_servers_tokenizer(
    tmp_path: Path, kind: str, prompt_source: str
) -> None:
    async with SimServer(default=NO_USAGE) as sim:
        # Cut by max_tokens: the answer's tokens are exactly what the server generated.
        config = sim_config(
            tmp_path,
            sim.base_url,
            n_prompts=3,
            model_settings={"tokenize": kind, "params": {"max_tokens": 5}},
        )
        result = await arun(config)
        tokenize_calls = sim.stats.tokenize_requests
        reported = await sim_usage(sim, config)
    df = result.dataframe().sort_values("prompt_id")
    assert (df["finish_reason"] == "length").all()
    assert (df["completion_tokens_source"] == "tokenized").all()
    assert (df["completion_tokens"] == [u["completion_tokens"] for u in reported]).all()
    assert (df["prompt_tokens_source"] == prompt_source).all()
    assert (df["usage_source"] == prompt_source).all()  # the less exact of the two
    exact = df["prompt_tokens"] == [u["prompt_tokens"] for u in reported]
    # Tokenized means equal to the server's own count; llama-cpp-python's lacks the template.
    assert exact.all() if prompt_source == "tokenized" else not exact.any()
    assert tokenize_calls == 6 + (kind == "llama-cpp-python")


async def sim_usage(sim: SimServer, config: RunConfig) -> list[dict[str, int]]:
    """What the simulator reports as usage for each prompt of `config`, asked without streaming."""
    model = dataclasses.replace(config.models[0], stream=False)
    provider = OpenAIProvider()
    usages = []
    async with Transport() as transport:
        for prompt in PromptSet(config.input).batches().__next__():
            request = provider.build_request(model, prompt.messages, {"max_tokens": 5}, None)
            resp = Response()
            await transport.send(request, provider, resp, 5.0)
            usages.append(
                {"prompt_tokens": resp.prompt_tokens, "completion_tokens": resp.completion_tokens}
            )
    return usages


@pytest.mark.anyio
async def test_without_a_tokenizer_counts_are_estimated(tmp_path: Path) -> None:
    async with SimServer(default=NO_USAGE) as sim:
        result = await arun(sim_config(tmp_path, sim.base_url, n_prompts=2))
        assert sim.stats.tokenize_requests == 0
    df = result.dataframe()
    assert (df["usage_source"] == "estimated").all() and (df["completion_tokens"] > 0).all()
    assert (df["prompt_tokens_source"] == "estimated").all() and (df["prompt_tokens"] > 0).all()
    assert (df["completion_tokens_source"] == "estimated").all()


@pytest.mark.anyio
async def test_usage_reported_by_the_server_needs_no_tokenizer(tmp_path: Path) -> None:
    profile = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=5, jitter=0.0)
    async with SimServer(default=profile) as sim:
        config = sim_config(tmp_path, sim.base_url, model_settings={"tokenize": "llamacpp"})
        result = await arun(config)
        assert sim.stats.tokenize_requests == 0
    df = result.dataframe()
    assert (df["usage_source"] == "server").all()
    assert (df["prompt_tokens_source"] == "server").all()
    assert (df["completion_tokens_source"] == "server").all()


class FailingTransport:
    async def fetch(self, request: Any, timeout_s: float) -> tuple[int, bytes]:
        raise RequestError("connection", "refused")


@pytest.mark.anyio
async def test_an_unreachable_tokenizer_leaves_counts_to_estimation() -> None:
    resp = Response()
    resp.text_parts.append("some answer")
    counter = TokenCounter(MODEL, None, "llamacpp")
    await counter.fill(FailingTransport(), resp, MESSAGES)  # type: ignore[arg-type]
    assert resp.completion_tokens is None and resp.completion_source is None


class WordTransport:
    """A tokenizer with one token a word (and, like llama-cpp-python's counter, a BOS)."""

    async def fetch(self, request: Any, timeout_s: float) -> tuple[int, bytes]:
        body = json.loads(request.body)
        words = len(str(body.get("content", body.get("input", body.get("prompt", "")))).split())
        return 200, json.dumps({"count": words + ("input" in body)}).encode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "finish", "params", "reasoning", "count", "source"),
    [
        ("llama-cpp-python", "length", {}, "", 3, "tokenized"),
        ("llama-cpp-python", "stop", {}, "", 3, "tokenized"),  # it does not count the EOS
        ("llamacpp", "stop", {}, "", 4, "tokenized"),  # its n_decoded counts the EOS
        ("vllm", "stop", {}, "", 4, "tokenized"),
        ("vllm", "length", {}, "", 3, "tokenized"),
        ("llamacpp", "stop", {"stop": ["\n"]}, "", 3, "estimated"),  # EOS or the cut string?
        ("llamacpp", "length", {}, " hm ok", 5, "estimated"),  # reasoning markup uncounted
        ("llamacpp", None, {}, "", 3, "estimated"),
    ],
)
async def test_an_answer_is_tokenized_only_when_the_count_is_exact(
    kind: str,
    finish: str | None,
    params: dict[str, Any],
    reasoning: str,
    count: int,
    source: str,
) -> None:
    resp = Response()
    resp.text_parts.append("one two three")
    if reasoning:
        resp.reasoning_parts.append(reasoning)
    resp.finish_reason = finish
    resp.prompt_tokens, resp.prompt_source = 7, "server"
    await TokenCounter(MODEL, None, kind).fill(WordTransport(), resp, MESSAGES, params)  # type: ignore[arg-type]
    assert (resp.completion_tokens, resp.completion_source) == (count, source)
    assert (resp.prompt_tokens, resp.prompt_source) == (7, "server")  # never replaced


@pytest.mark.anyio
async def test_failed_rows_carry_no_counts_no_sources_and_no_cost(tmp_path: Path) -> None:
    failing = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=8, error_rate=1.0)
    async with SimServer(default=failing) as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            n_prompts=3,
            engine={"max_retries": 0},
            model_settings={"usd_per_mtok": {"input": 1.0, "output": 2.0}},
        )
        df = (await arun(config)).dataframe()
    assert (df["status"] == "error").all() and (df["http_status"] == 503).all()
    for column in (
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_source",
        "completion_tokens_source",
        "usage_source",
        "cost_usd",
    ):
        assert df[column].isna().all(), column
