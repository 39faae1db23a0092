"""Polling with a deadline, for tests, the process harness and the benchmarks."""

import time


def wait_until(predicate, *, deadline: float, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate()`` every ``interval`` seconds; return its first truthy value.

    Raise AssertionError naming ``message`` when ``deadline`` seconds pass first.
    """
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:g}s waiting for {message}")
        time.sleep(interval)
