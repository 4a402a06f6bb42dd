"""Reference client: the leanest reasonable aiohttp + orjson streaming loop (no bookkeeping).

Usage: python lean_client.py URL REQUESTS CONCURRENCY [MAX_TOKENS]
Prints one JSON object: {"ttft_s": [...], "errors": n}.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson


async def main(url: str, total: int, concurrency: int, max_tokens: int) -> None:
    ttfts: list[float] = []
    errors = 0
    next_index = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index, errors
        while next_index < total:
            i = next_index
            next_index += 1
            body = orjson.dumps(
                {
                    "model": "bench",
                    "messages": [{"role": "user", "content": f"prompt {i}"}],
                    "max_tokens": max_tokens,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            )
            start = time.perf_counter()
            first = None
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                if r.status != 200:
                    errors += 1
                    await r.read()
                    continue
                buffer = b""
                async for chunk in r.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data: ") or line == b"data: [DONE]":
                            continue
                        event = orjson.loads(line[6:])
                        choices = event.get("choices")
                        if first is None and choices and choices[0]["delta"].get("content"):
                            first = time.perf_counter()
            if first is not None:
                ttfts.append(first - start)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    print(orjson.dumps({"ttft_s": ttfts, "errors": errors}).decode())


if __name__ == "__main__":
    url, total, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    asyncio.run(main(url, total, concurrency, int(sys.argv[4]) if len(sys.argv) > 4 else 64))
