"""The floor's RQ job: does nothing, so jobs/s through a worker measures RQ itself."""


def noop() -> None:
    """Return None at once."""
