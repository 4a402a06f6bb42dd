"""How a simulated model slows down under load, like an LLM server on one GPU.

Each model the simulator serves is its own deployment with three knobs (see
`SimProfile`):

- `slots`: sequences decoded at once (a server's batch size / KV-cache room).
  A request beyond them waits for a slot before anything else happens.
- `prefill_tokens_per_s`: prompts are processed one after another in one
  lane, so a request's time to first token grows with its own prompt's length
  and with the prompts queued before it.
- `server_tokens_per_s`: the decode throughput the requests in flight share.
  One request alone decodes at its `tokens_per_s`; with k decoding, each gets
  `min(tokens_per_s, server_tokens_per_s / k)`.

So TTFT = slot wait + prefill queue + own prefill + the profile's `ttft_s`,
and decoding slows once the shared throughput is the limit: latency rises with
load, and a rate beyond the server's throughput builds a queue (a sweep's knee).
A knob at 0 is unlimited (the default for models without a built-in profile).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack

from llamabatch.sim.plan import Plan
from llamabatch.sim.profile import SimProfile


class Deployment:
    """One simulated model's capacity: its slots, prefill lane and shared decode throughput."""

    def __init__(self, profile: SimProfile) -> None:
        self.profile = profile
        self._slots = asyncio.Semaphore(profile.slots) if profile.slots > 0 else None
        self._prefill_free_at = 0.0  # monotonic time the prefill lane is next idle
        self.decoding = 0  # sequences decoding now
        self.waiting = 0  # requests waiting for a slot

    def decode_rate(self, own_rate: float) -> float:
        """Tokens per second one sequence gets now."""
        shared = self.profile.server_tokens_per_s
        if shared > 0 and self.decoding > 0:
            return min(own_rate, shared / self.decoding)
        return own_rate

    async def generate(self, plan: Plan) -> AsyncGenerator[int, None]:
        """Yield how many of the plan's tokens exist so far, as they are generated.

        The first yield (1 token) comes at the time to first token; the last is
        the plan's length. Leaving early (a disconnect) frees the slot at once.
        """
        async with AsyncExitStack() as stack:
            if self._slots is not None:
                self.waiting += 1
                try:
                    await stack.enter_async_context(self._slots)
                finally:
                    self.waiting -= 1
            await asyncio.sleep(self._prefill_s(plan.prompt_tokens) + plan.ttft_s)
            sequences = plan.sequences
            self.decoding += sequences
            try:
                async for produced in self._decode(plan):
                    yield produced
            finally:
                self.decoding -= sequences

    def _prefill_s(self, prompt_tokens: int) -> float:
        """Seconds until this prompt is prefilled: the lane's queue, then its own tokens."""
        speed = self.profile.prefill_tokens_per_s
        if speed <= 0:
            return 0.0
        now = time.monotonic()
        done = max(now, self._prefill_free_at) + prompt_tokens / speed
        self._prefill_free_at = done
        return done - now

    async def _decode(self, plan: Plan) -> AsyncIterator[int]:
        length = plan.length
        yield 1
        if length <= 1:
            return
        if plan.decode_s <= 0:
            yield length  # an instant profile (tokens_per_s = 0)
            return
        own = (length - 1) / plan.decode_s
        produced, emitted, last = 1.0, 1, time.monotonic()
        while emitted < length:
            rate = self.decode_rate(own)
            await asyncio.sleep((emitted + 1 - produced) / rate)
            now = time.monotonic()
            produced += (now - last) * rate
            last = now
            # Every token due by now goes out together (keeps fast profiles cheap).
            emitted = min(length, max(emitted + 1, math.floor(produced + 1e-9)))
            yield emitted
