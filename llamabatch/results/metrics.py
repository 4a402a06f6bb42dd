"""Per-request measurements, by the definitions of the results schema (README "Metrics")."""

from __future__ import annotations

from typing import Any

from llamabatch.wire import Response


def timings(resp: Response, completion_tokens: int | None) -> dict[str, float | None]:
    """ttft_s, ttfb_s, ttfa_s, latency_s, decode_tps and itl_mean_s of one finished attempt."""
    start = resp.started_t
    latency = resp.ended_t - start
    ttft = None if resp.first_token_t is None else resp.first_token_t - start
    ttfa = None if ttft is None or resp.first_answer_t is None else resp.first_answer_t - start
    ttfb = None if resp.first_byte_t is None else resp.first_byte_t - start
    decode_tps = None
    itl = None
    if ttft is not None and resp.last_token_t is not None:
        decode_s = latency - ttft
        if completion_tokens is not None and completion_tokens > 1 and decode_s > 0:
            decode_tps = (completion_tokens - 1) / decode_s
        if resp.token_chunks > 1:
            itl = (resp.last_token_t - resp.first_token_t) / (resp.token_chunks - 1)  # type: ignore[operator]
    return {
        "ttft_s": ttft,
        "ttfb_s": ttfb,
        "ttfa_s": ttfa,
        "latency_s": latency,
        "decode_tps": decode_tps,
        "itl_mean_s": itl,
    }


def chunk_columns(resp: Response) -> dict[str, Any]:
    """chunk_times_s (offsets from the request's start, to the microsecond) and chunk_tokens."""
    if resp.chunks is None:
        return {}
    start = resp.started_t
    tokens = [n for _, n in resp.chunks]
    return {
        "chunk_times_s": [round(t - start, 6) for t, _ in resp.chunks],
        "chunk_tokens": tokens if any(n is not None for n in tokens) else None,
    }
