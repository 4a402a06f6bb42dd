"""Per-request measurements, by the definitions of the results schema."""

from __future__ import annotations

from typing import Any

from llamabatch.providers.base import Response

CHARS_PER_TOKEN = 4.0


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) when the server gives none."""
    return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0


def message_chars(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(
                len(str(part.get("text", ""))) for part in content if isinstance(part, dict)
            )
    return total


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
