"""The coordinator's count of tickets maybe not sent yet, against counting them one by one."""

from __future__ import annotations

import random

import pytest

from llamabatch.engine.unsent import UnsentTickets


def _brute(open_at: dict[int, float], ticket: int, window_s: float) -> int:
    since = open_at[ticket] - window_s
    return sum(1 for t, at in open_at.items() if t < ticket and at >= since)


@pytest.mark.parametrize("seed", range(6))
def test_counts_match_a_scan_of_the_open_tickets(seed: int) -> None:
    # Bursts of tickets at one instant (a lease's block), gaps in the numbering (tickets
    # given without tracking), answers in any order, tickets whose answer never comes
    # (dropped later, or held open long enough that the ring must grow past them).
    rng = random.Random(seed)
    window = 0.1
    tracker = UnsentTickets(window)
    open_at: dict[int, float] = {}
    now, ticket, checked, nonzero = 0.0, 0, 0, 0
    for _ in range(3_000):
        roll = rng.random()
        if roll < 0.5 or not open_at:
            now += rng.choice([0.0, 0.0, 0.001, 0.02, 0.09, 0.2])
            for _ in range(rng.choice([1, 1, 4, 16])):
                ticket += rng.choice([1, 1, 1, 3])
                tracker.issue(ticket, now)
                open_at[ticket] = now
        elif roll < 0.97:
            # Mostly recent tickets, sometimes an old one: both ends of the ring.
            pool = sorted(open_at)
            answered = pool[-rng.randint(1, min(len(pool), 40))] if rng.random() < 0.8 else pool[0]
            if rng.random() < 0.9:
                want = _brute(open_at, answered, window)
                assert tracker.close(answered) == want
                checked += 1
                nonzero += want > 0
            else:
                tracker.drop(answered)
            del open_at[answered]
        assert len(tracker) == len(open_at)
    assert tracker.close(ticket + 1) == 0  # never issued
    assert checked > 500 and nonzero > 150  # the counts compared were not all zero
    assert tracker._size > 256  # the ring grew around long-open tickets and stayed right


def test_a_ticket_issued_outside_the_window_is_not_counted() -> None:
    tracker = UnsentTickets(0.1)
    for ticket, at in ((1, 0.0), (2, 0.07), (3, 0.12), (4, 0.16)):
        tracker.issue(ticket, at)
    assert tracker.close(4) == 2  # 2 and 3 (issued at 0.06 or later); 1 is too old
    assert tracker.close(3) == 1  # 2; 4 is newer
    assert tracker.close(2) == 1  # 1
    assert tracker.close(1) == 0


def test_a_ticket_issued_exactly_a_window_before_is_counted() -> None:
    tracker = UnsentTickets(0.5)  # binary fractions: 1.0 - 0.5 is exactly 0.5
    tracker.issue(1, 0.5)
    tracker.issue(2, 1.0)
    assert tracker.close(2) == 1
