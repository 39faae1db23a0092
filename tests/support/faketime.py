"""libfaketime for the tests, installed under the checkout's .formation folder (embedded.faketime)."""

from pathlib import Path

from django.conf import settings

from embedded import faketime


def clock_offset_env(offset: str) -> dict[str, str]:
    """Return the environment that runs a child process with its clock off by ``offset`` (e.g. "+90s")."""
    return faketime.clock_offset_env(Path(settings.BASE_DIR) / ".formation", offset)
