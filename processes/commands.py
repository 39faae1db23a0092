"""Helpers shared by the management commands of the process types."""


def verbosity_log_level(verbosity: int) -> str:
    """Return the log level name for a command's ``--verbosity`` (0, 1, 2 or 3), as django-rq's commands map it.

    0 → "WARNING", 1 → "INFO", 2 and 3 → "DEBUG" (django_rq/management/commands/rqworker.py).
    """
    if verbosity >= 2:
        return "DEBUG"
    if verbosity == 0:
        return "WARNING"
    return "INFO"
