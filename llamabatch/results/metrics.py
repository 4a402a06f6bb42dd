"""Per-request measurements, by the definitions of the results schema (README "Metrics")."""

from __future__ import annotations

from collections.abc import Sequence
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


def embedding_columns(
    vectors: Sequence[Any], total_tokens: int | None, weights: Sequence[int]
) -> list[dict[str, Any]]:
    """The columns of each input's row of one embeddings request.

    A request's token count is the server's for all its inputs: a single input
    gets it whole (`usage_source` server); several share it in proportion to
    their length (`split`, the shares adding up to the server's count); with no
    count from the server, each input's is estimated.
    """
    if total_tokens is None:
        counts, source = list(weights), "estimated"
    elif len(weights) == 1:
        counts, source = [total_tokens], "server"
    else:
        counts, source = _shares(total_tokens, weights), "split"
    return [
        {
            "embedding": vector,
            "dimensions": len(vector),
            "output_text": None,
            "finish_reason": None,
            "prompt_tokens": count,
            "completion_tokens": None,
            "total_tokens": count,
            "usage_source": source,
        }
        for vector, count in zip(vectors, counts, strict=True)
    ]


def _shares(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights`, as whole numbers adding up to it."""
    if not any(weights):
        weights = [1] * len(weights)
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: shares[i] - exact[i])[: total - sum(shares)]:
        shares[i] += 1
    return shares
