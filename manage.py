#!/usr/bin/env python
"""Django's command-line utility for Formation (release phase, worker, scheduler, mailer, one-offs)."""

import contextlib
import os
import signal
import sys

# Process types whose graceful stop is exit 0. A SIGTERM or SIGINT that arrives while Django is
# still loading, before the command installs its own handlers, means "stop before starting":
# exit 0 too, instead of dying by the signal.
PROCESS_TYPE_COMMANDS = {"rqworker", "rqscheduler", "mailer"}


def _stop_before_start(signum, frame):
    # Nothing has started yet, so end now. Not by raising SystemExit: a signal handler's exception
    # can land inside an import-lock or weakref callback, where Python prints "Exception ignored"
    # and goes on starting the process type, which then outlives its stop (seen under load).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def main() -> None:
    """Run a management command; a configuration error exits 1 with one line naming the variable."""
    if len(sys.argv) > 1 and sys.argv[1] in PROCESS_TYPE_COMMANDS:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stop_before_start)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # The process type every log line names (settings.LOGGING): the Procfile's type whose command
    # this is, read here at the entry point so that the settings never read the Procfile.
    from processes.procfile import process_type

    os.environ["PROCESS_TYPE"] = process_type(sys.argv)
    # Imported once the signal rule above is in place, as Django's own manage.py template does:
    # a SIGTERM that arrives while Django imports still ends the process with exit 0.
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        sys.exit(f"configuration error: {exc}")


if __name__ == "__main__":
    main()
