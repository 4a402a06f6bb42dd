"""Tickets handed out and not answered yet, counted by how recently they were issued.

A coordinator's admission asks, for each response with budget headers, how
many tickets issued within a short window before that response's ticket are
still unanswered (see `Admission.observe_headers`). Scanning the unanswered
tickets cost O(tickets in flight) per response; here each issue is amortised
O(1) and each answer O(log n): a Fenwick tree of open tickets, indexed by
issue order on a ring that doubles when its oldest slot is still open.
"""

from __future__ import annotations

from collections import deque

_FIRST_SIZE = 256  # ring slots (a power of two)


class UnsentTickets:
    """Open tickets, with the first ticket issued within `window_s` before each."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._size = _FIRST_SIZE
        self._tree = [0] * (_FIRST_SIZE + 1)  # 1-based Fenwick tree over ring slots
        self._open: dict[int, tuple[int, int]] = {}  # ticket -> (its seq, first seq in window)
        self._seq_open: set[int] = set()
        self._recent: deque[tuple[float, int]] = deque()  # (issued at, seq), last window_s
        self._seq = 0  # issues so far; the newest open ticket's seq is at most this

    def __len__(self) -> int:
        return len(self._open)

    def issue(self, ticket: int, now: float) -> None:
        """Open `ticket`, issued at `now` (tickets are issued in increasing order)."""
        self._seq += 1
        seq = self._seq
        recent = self._recent
        since = now - self.window_s
        while recent and recent[0][0] < since:
            recent.popleft()
        recent.append((now, seq))
        if seq - self._size in self._seq_open:  # the slot it takes is still someone's
            self._grow()
        self._open[ticket] = (seq, recent[0][1])
        self._seq_open.add(seq)
        self._add(seq, 1)

    def close(self, ticket: int) -> int:
        """Close `ticket`; how many tickets issued within `window_s` before it are open.

        0 for a ticket not open (never issued here, closed, or dropped).
        """
        found = self._open.pop(ticket, None)
        if found is None:
            return 0
        seq, first = found
        self._seq_open.discard(seq)
        self._add(seq, -1)
        # Every open seq is within the ring (see `issue`): older slots hold newer tickets.
        first = max(first, self._seq - self._size + 1)
        return self._range(first, seq - 1) if first < seq else 0

    def drop(self, ticket: int) -> None:
        """Close `ticket` without counting (its answer will not come)."""
        found = self._open.pop(ticket, None)
        if found is not None:
            self._seq_open.discard(found[0])
            self._add(found[0], -1)

    def _add(self, seq: int, delta: int) -> None:
        tree, i = self._tree, (seq & (self._size - 1)) + 1
        while i <= self._size:
            tree[i] += delta
            i += i & -i

    def _prefix(self, slot: int) -> int:
        """Open tickets in ring slots 0..slot (-1: none)."""
        tree, i, total = self._tree, slot + 1, 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def _range(self, first: int, last: int) -> int:
        """Open tickets with seq in [first, last] (fewer than the ring's size apart)."""
        mask = self._size - 1
        a, b = first & mask, last & mask
        if a <= b:
            return self._prefix(b) - self._prefix(a - 1)
        return self._prefix(mask) - self._prefix(a - 1) + self._prefix(b)

    def _grow(self) -> None:
        """Double the ring and put every open ticket back (amortised over the issues)."""
        self._size *= 2
        self._tree = [0] * (self._size + 1)
        for seq in self._seq_open:
            self._add(seq, 1)
