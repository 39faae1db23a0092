"""The tests' side of embedded.silent_link (a TCP link made silent, root only): skip with the reason
when it cannot be made here."""

import pytest

from embedded.silent_link import SilentLink, unavailable_reason

__all__ = ["SilentLink", "require", "unavailable_reason"]


def require() -> None:
    """Skip the calling test with unavailable_reason() (not root, no ``ip``), if any."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
