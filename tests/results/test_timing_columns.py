"""Latency columns of stored rows: ttfb_s <= ttft_s <= ttfa_s, and raw chunk times on request."""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from anyio.streams.buffered import BufferedByteReceiveStream

from llamabatch import SimProfile, SimServer, arun
from tests.helpers import ROOT, sim_config

pytestmark = pytest.mark.anyio
EXACT = SimProfile(ttft_s=0.02, tokens_per_s=200.0, output_tokens=8, jitter=0.0)


def schema_of(output: Path) -> pa.Schema:
    return pq.read_schema(next(output.glob("part-*.parquet")))


async def test_chunk_times_are_stored_per_streamed_row(tmp_path: Path) -> None:
    async with SimServer(default=EXACT) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=12, run={"chunk_times": True})
        result = await arun(config)
    df = result.dataframe()
    assert result.exit_code == 0 and len(df) == 12
    assert schema_of(config.output).field("chunk_times_s").type == pa.list_(pa.float32())
    assert (df["ttfb_s"] <= df["ttft_s"]).all() and (df["ttft_s"] <= df["ttfa_s"]).all()
    assert (df["ttft_s"] == df["ttfa_s"]).all()  # no reasoning
    for row in df.itertuples():
        times = list(row.chunk_times_s)
        assert times == sorted(times) and len(times) >= 1
        assert times[0] == pytest.approx(row.ttft_s, abs=1e-5)  # float32, to the microsecond
        assert times[-1] <= row.latency_s + 1e-5
        # The simulator sends a token per chunk when it keeps to its 5 ms schedule; a late
        # one may merge some, so there are at most as many chunks as tokens.
        assert len(times) <= row.completion_tokens
    assert df["chunk_tokens"].isna().all()  # this server does not say how many per chunk


async def test_without_chunk_times_the_columns_are_null(tmp_path: Path) -> None:
    async with SimServer(default=EXACT) as sim:
        result = await arun(sim_config(tmp_path, sim.base_url, n_prompts=3))
    df = result.dataframe()
    assert df["chunk_times_s"].isna().all() and df["chunk_tokens"].isna().all()
    assert df["ttfb_s"].notna().all() and (df["ttfb_s"] <= df["ttft_s"]).all()
    assert (df["ttft_s"] == df["ttfa_s"]).all()


@asynccontextmanager
async def reasoning_server(gap_s: float) -> AsyncIterator[str]:
    """Streams two reasoning chunks, then two answer chunks (with logprobs), `gap_s` apart."""

    def event(payload: object) -> bytes:
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def delta(d: dict[str, str], finish: str | None = None) -> bytes:
        lp = {"content": [{"token": "t", "logprob": 0.0, "top_logprobs": []}]}
        return event(
            {"choices": [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": lp}]}
        )

    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 4,
        "total_tokens": 9,
        "completion_tokens_details": {"reasoning_tokens": 2},
    }

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
        for piece in (
            delta({"reasoning_content": "Two plus"}),
            delta({"reasoning_content": " two."}),
            delta({"content": "Four"}),
            delta({"content": "."}),
        ):
            await asyncio.sleep(gap_s)  # the server's pace, not synchronisation
            await response.write(piece)
        await response.write(
            event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            + event({"choices": [], "usage": usage})
            + b"data: [DONE]\n\n"
        )
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def test_a_reasoning_stream_answers_after_its_first_token(tmp_path: Path) -> None:
    gap = 0.02
    async with reasoning_server(gap) as url:
        config = sim_config(tmp_path, url, n_prompts=2, run={"chunk_times": True})
        result = await arun(config)
    df = result.dataframe()
    assert result.exit_code == 0
    for row in df.itertuples():
        assert row.ttfb_s <= row.ttft_s < row.ttfa_s
        assert row.ttfa_s - row.ttft_s >= 2 * gap * 0.9  # two reasoning chunks later
        assert row.reasoning_tokens == 2 and row.reasoning_text == "Two plus two."
        assert row.output_text == "Four."
        assert list(row.chunk_tokens) == [1, 1, 1, 1]
        times = list(row.chunk_times_s)
        assert len(times) == 4 and times[2] == pytest.approx(row.ttfa_s, abs=1e-5)


@pytest.mark.slow
async def test_chunk_times_match_when_each_chunk_was_sent_at_concurrency_32(
    tmp_path: Path,
) -> None:
    """A server in its own process writes into each chunk when it sent it (after its head)."""
    tokens, gap = 16, 0.02
    argv = [sys.executable, str(ROOT / "benchmarks/sse_server.py"), "0", "--stamp"]
    argv += ["--tokens", str(tokens), "--ttft-s", "0.05", "--gap-s", str(gap)]
    async with await anyio.open_process(argv) as server:
        assert server.stdout is not None
        ready = await BufferedByteReceiveStream(server.stdout).receive_until(b"\n", 100)
        url = f"http://127.0.0.1:{int(ready.split()[1])}/v1"
        try:
            config = sim_config(
                tmp_path,
                url,
                n_prompts=96,
                engine={"concurrency": 32},
                run={"chunk_times": True},
            )
            result = await arun(config, check=False)  # it answers every path with a stream
        finally:
            server.terminate()
    assert result.exit_code == 0
    errors_ms = []
    for row in result.dataframe().itertuples():
        sent = [int(word[1:]) * 1e-6 for word in row.output_text.split()]
        times = list(row.chunk_times_s)
        assert len(times) == len(sent) == tokens
        errors_ms += [abs(t - row.ttfb_s - s) * 1e3 for t, s in zip(times, sent, strict=True)]
    within = sum(e <= 2.0 for e in errors_ms) / len(errors_ms)
    # Acceptance: within 2 ms. A loaded machine (other suites on both cores) may make the
    # client read late, and chunks read together share the later time: hence the margin
    # here; benchmarks/RESULTS.md has the figures measured apart.
    assert statistics.median(errors_ms) <= 2.0 and within >= 0.75, (within, max(errors_ms))
