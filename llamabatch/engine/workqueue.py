"""One model's pending work: (prompt, sample) pairs read lazily from the prompt stream."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol

import anyio

from llamabatch.prompts import Prompt
from llamabatch.results.resume import DoneIndex

# prompt, sample, scheduled send time (open loop), stored replies of a conversation's turns
WorkItem = tuple[Prompt, int, float | None, tuple[str, ...]]


class PromptSource(Protocol):
    """Where prompts come from: a PromptSet, or any batches of prompts."""

    def batches(self, *, only: bytearray | None = None) -> Iterator[list[Prompt]]: ...


class WorkQueue:
    """Workers take items without a trip through the event loop.

    A batch of prompts is read (in a worker thread) only when the queue runs
    dry, so memory holds one batch per model however long the prompt set. In
    open loop the items carry their scheduled send times and `get` waits for
    them; a worker that takes an item late makes the delay visible.
    """

    def __init__(
        self,
        *,
        model: str,
        prompts: PromptSource,
        done: DoneIndex,
        repeats: int,
        arrivals: Iterator[float] | None,
        stopping: anyio.Event,
        only: bytearray | None = None,
    ) -> None:
        self._model = model
        self._batches = prompts.batches(only=only)
        self._done = done
        self._repeats = repeats
        self._arrivals = arrivals
        self._stopping = stopping
        self._items: deque[tuple[Prompt, int, tuple[str, ...]]] = deque()
        self._exhausted = False
        self._refill = anyio.Lock()

    def unschedule(self) -> None:
        """Hand out what is left at once, without waiting for its arrival times."""
        self._arrivals = None

    async def get(self) -> WorkItem | None:
        """The next item, or None when there is no more work (or the run is stopping)."""
        while not self._items:
            if self._exhausted or self._stopping.is_set():
                return None
            async with self._refill:
                if not self._items and not self._exhausted:
                    items = await anyio.to_thread.run_sync(self._next_batch)
                    if items is None:
                        self._exhausted = True
                    else:
                        self._items.extend(items)
        if self._stopping.is_set():
            return None
        prompt, sample, replies = self._items.popleft()
        if self._arrivals is None:
            return prompt, sample, None, replies
        scheduled = next(self._arrivals)
        await anyio.sleep(max(0.0, scheduled - time.perf_counter()))
        return prompt, sample, scheduled, replies

    def take_more(
        self, limit: int, budget: int, cost: Callable[[Prompt], int]
    ) -> list[tuple[Prompt, int]]:
        """Up to `limit` more (prompt, sample) pairs already read, costing at most `budget`.

        For requests that pack several rows (embeddings): they ride with the
        first one `get` gave, so they keep no arrival time of their own.
        """
        taken: list[tuple[Prompt, int]] = []
        while len(taken) < limit and self._items:
            price = cost(self._items[0][0])
            if price > budget:
                break
            budget -= price
            prompt, sample, _ = self._items.popleft()
            taken.append((prompt, sample))
        return taken

    def _next_batch(self) -> list[tuple[Prompt, int, tuple[str, ...]]] | None:
        """The next batch's work (blocking): what is pending, with the stored replies that
        conversations resumed mid-way go on from."""
        batch = next(self._batches, None)
        if batch is None:
            return None
        pending = list(self._done.pending(self._model, batch, self._repeats))
        resumed = {(p.id, s): stored for p, s, stored in pending if stored}
        replies = self._done.replies(self._model, resumed)
        return [(p, s, replies.get((p.id, s), ())) for p, s, _ in pending]


class Workers:
    """One model's workers, started as work arrives: one more whenever none is idle.

    Never one per slot up front, so a high concurrency costs nothing until
    there is work for it.
    """

    def __init__(
        self,
        tg: anyio.abc.TaskGroup,
        limit: int,
        work: Callable[[Workers], Coroutine[Any, Any, None]],
    ) -> None:
        self.tg, self.limit, self.work = tg, limit, work
        self.started = self.idle = 0

    def grow(self) -> None:
        if self.idle == 0 and self.started < self.limit:
            self.started += 1
            self.tg.start_soon(self.work, self)

    async def take(self, queue: WorkQueue) -> WorkItem | None:
        """The queue's next item; a worker that gets one makes sure another is waiting."""
        self.idle += 1
        item = await queue.get()
        self.idle -= 1
        if item is not None:
            self.grow()
        return item
