"""Exponential backoff with full jitter, for clients that retry a shared service that refused them.

The rule is AWS's "Exponential Backoff And Jitter" (Marc Brooker, 2015,
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/), "Full Jitter":
``sleep = random_between(0, min(cap, base * 2 ** attempt))``. Of the schemes compared there it
spreads the retries of many clients the most, so they stop arriving together, for about the
same total wait as the others.
"""

import random
from collections.abc import Callable


def full_jitter(
    *, attempt: int, base: float, cap: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Return seconds to wait before retry number ``attempt`` (0 for the first retry).

    A random value between 0 and ``min(cap, base * 2 ** attempt)`` seconds, drawn with
    ``uniform(low, high)`` (random.uniform unless a test gives its own). ``base`` and ``cap`` are
    seconds, both > 0. Raise ValueError for a negative ``attempt``.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    # 2 ** attempt grows without bound; past the cap its exact value no longer matters.
    ceiling = cap if attempt >= 64 else min(cap, base * 2**attempt)
    return uniform(0.0, ceiling)


class Backoff:
    """The waits of one client that retries while a service refuses it: full_jitter over
    consecutive refusals, starting again from the first wait after a success (``reset``)."""

    def __init__(self, *, base: float, cap: float, uniform: Callable[[float, float], float] = random.uniform):
        self.base, self.cap, self.uniform = base, cap, uniform
        self.attempt = 0

    def next_wait(self) -> float:
        """Return the seconds to wait after one more refusal in a row (and count it)."""
        wait = full_jitter(attempt=self.attempt, base=self.base, cap=self.cap, uniform=self.uniform)
        self.attempt += 1
        return wait

    def reset(self) -> None:
        """Forget the refusals: the service answered."""
        self.attempt = 0
