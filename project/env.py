"""Read typed configuration from the environment (twelve-factor, factor 3).

Every reader raises ``django.core.exceptions.ImproperlyConfigured`` with a message that
starts with the variable's name, so a missing or malformed value stops start-up with one
line that tells the operator what to fix.
"""

import math
import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    """Return the variable ``name`` as a string, or ``default`` when it is unset or empty.

    Raise ImproperlyConfigured when ``required`` and the variable is unset or empty.
    """
    value = os.environ.get(name, "")
    if value == "":
        if required:
            raise ImproperlyConfigured(f"{name} is not set: it is required (see README, 'Environment variables')")
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    """Return the variable ``name`` as a bool (1/true/yes/on or 0/false/no/off, any case).

    Raise ImproperlyConfigured for any other value.
    """
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def env_number(name: str, default: float, *, minimum: float = 0, maximum: float | None = None) -> float:
    """Return the variable ``name`` as a float in [minimum, maximum], or ``default`` when unset.

    Raise ImproperlyConfigured when the value is not a number or lies outside the range.
    """
    value = os.environ.get(name, "")
    if value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name}={value!r} is not a finite number")
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise ImproperlyConfigured(f"{name}={value!r} is out of range: it must be {bound}")
    return number


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Return the variable ``name`` as an int in [minimum, maximum], or ``default`` when unset.

    Raise ImproperlyConfigured when the value is not an integer or lies outside the range.
    """
    value = os.environ.get(name, "")
    if value.strip() == "":
        return default
    try:
        int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    return int(env_number(name, default, minimum=minimum, maximum=maximum))


def web_server_settings() -> dict[str, int]:
    """Return the web process type's settings from PORT, WEB_CONCURRENCY, WEB_TIMEOUT and
    WEB_GRACEFUL_TIMEOUT (timeouts in seconds), validated.

    Read by the gunicorn config file and by the settings module, so the release phase and
    ``manage.py check`` reject a bad value before web starts (gunicorn itself reads
    WEB_CONCURRENCY with a bare int() and would fail with a traceback).
    Raise ImproperlyConfigured naming the variable.
    """
    return {
        "port": env_int("PORT", 8000, minimum=1, maximum=65535),
        "workers": env_int("WEB_CONCURRENCY", 2, minimum=1, maximum=64),
        "timeout": env_int("WEB_TIMEOUT", 30, minimum=1),
        "graceful_timeout": env_int("WEB_GRACEFUL_TIMEOUT", 25, minimum=1),
    }


def env_list(name: str, default: list[str]) -> list[str]:
    """Return the variable ``name`` split on commas, blanks dropped, or ``default`` when unset."""
    value = os.environ.get(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]
