"""Per-request measurements, by the definitions of the results schema."""

from __future__ import annotations

from llamabatch.wire import Response


def timings(resp: Response, completion_tokens: int | None) -> dict[str, float | None]:
    """ttft_s, latency_s, decode_tps and itl_mean_s of one finished attempt."""
    latency = resp.ended_t - resp.started_t
    ttft = None if resp.first_token_t is None else resp.first_token_t - resp.started_t
    decode_tps = None
    itl = None
    if ttft is not None and resp.last_token_t is not None:
        decode_s = latency - ttft
        if completion_tokens is not None and completion_tokens > 1 and decode_s > 0:
            decode_tps = (completion_tokens - 1) / decode_s
        if resp.token_chunks > 1:
            itl = (resp.last_token_t - resp.first_token_t) / (resp.token_chunks - 1)  # type: ignore[operator]
    return {"ttft_s": ttft, "latency_s": latency, "decode_tps": decode_tps, "itl_mean_s": itl}
