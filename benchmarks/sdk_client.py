"""Reference client: the official openai SDK with a semaphore, as many scripts do it.

Usage: python sdk_client.py BASE_URL REQUESTS CONCURRENCY [MAX_TOKENS]
Prints one JSON object: {"ttft_s": [...], "errors": n}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import openai


async def main(base_url: str, total: int, concurrency: int, max_tokens: int) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)
    ttfts: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        async with semaphore:
            start = time.perf_counter()
            first = None
            try:
                stream = await client.chat.completions.create(
                    model="bench",
                    messages=[{"role": "user", "content": f"prompt {i}"}],
                    max_tokens=max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async for chunk in stream:
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter()
            except openai.OpenAIError:
                errors += 1
            if first is not None:
                ttfts.append(first - start)

    await asyncio.gather(*(one(i) for i in range(total)))
    await client.close()
    print(json.dumps({"ttft_s": ttfts, "errors": errors}))


if __name__ == "__main__":
    base, total, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    asyncio.run(main(base, total, concurrency, int(sys.argv[4]) if len(sys.argv) > 4 else 64))
