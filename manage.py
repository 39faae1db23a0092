#!/usr/bin/env python
"""Django's command-line utility for Formation (release phase, worker, scheduler, mailer, one-offs)."""

import os
import sys


def main() -> None:
    """Run a management command; a configuration error exits 1 with one line naming the variable."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        sys.exit(f"configuration error: {exc}")


if __name__ == "__main__":
    main()
