"""When to try a delivery again: exponential back-off with jitter over about a day.

The schedule follows the Standard Webhooks recommendation: immediately, 5 s,
5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27.6 hours in all). Each wait is
stretched by up to :data:`JITTER` so that a recovering endpoint is not hit by
every message at once, and never shorter than the endpoint's ``Retry-After``
(capped at :data:`MAX_RETRY_AFTER`).
"""

from __future__ import annotations

import random
from datetime import timedelta

SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
JITTER = 0.1
MAX_RETRY_AFTER = timedelta(hours=10)


def next_delay(
    attempts: int,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> timedelta | None:
    """The wait before the next try after ``attempts`` failed tries; None when none is left."""
    if attempts >= len(SCHEDULE):
        return None
    base = SCHEDULE[attempts]
    jitter = (rng or random).uniform(0, JITTER)  # spreading load, not a secret
    delay = base * (1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(timedelta(seconds=retry_after), MAX_RETRY_AFTER))
    return delay
