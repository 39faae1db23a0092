"""Django's ``migrate``, guarded for the release phase: one release at a time, short lock waits.

Procfile: ``release: exec python manage.py migrate --noinput`` (also the compose ``release``
service and the Kubernetes release Job). This command replaces Django's own ``migrate`` (the
``project`` app is first in INSTALLED_APPS, and the first app with a command of a name wins) and
adds, around the same migrations, what ``processes/release.py`` describes:

- a second release started while one runs waits for it (up to RELEASE_LOCK_WAIT seconds), then
  finds nothing to apply;
- each lock wait lasts at most MIGRATION_LOCK_TIMEOUT seconds, so shop queries queued behind a
  migration's ALTER TABLE wait no longer; a blocked migration is rolled back and retried up to
  MIGRATION_LOCK_RETRIES times with a doubling pause from MIGRATION_RETRY_DELAY seconds;
- when that runs out, exit 1 with one line naming the blocking session.

With LOG_FORMAT=json its progress lines ("Applying orders.0007_order_request_id... OK") are log
lines of the ``release`` logger, so the release phase writes JSON lines like every process type.

``--plan`` and ``--check`` only read, and run unguarded. A one-off process: SIGTERM stops it
like Django's migrate (the running migration's transaction rolls back with the session).
"""

import functools
import logging

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import DatabaseError, connections

from core.logs import LogLines
from processes.release import ReleaseBlocked, migrations_run, release_session


class Command(migrate.Command):
    help = (
        "Apply the migrations as the release phase: one release at a time, lock waits bounded by "
        "MIGRATION_LOCK_TIMEOUT seconds and retried; exit 1 with one line naming what blocks it."
    )

    def execute(self, *args, **options):
        if settings.LOG_FORMAT != "json" or options.get("stdout"):
            return super().execute(*args, **options)
        options["stdout"] = lines = LogLines(logging.getLogger("release"))
        try:
            return super().execute(*args, **options)
        finally:
            lines.close()

    def handle(self, *args, **options) -> None:
        """Run Django's migrate inside the release guards; raise CommandError (one line) when blocked."""
        connection = connections[options["database"]]
        if options["plan"] or options["check_unapplied"] or connection.vendor != "postgresql":
            return super().handle(*args, **options)
        self._line_open = False
        try:
            with release_session(
                connection=connection,
                lock_wait=settings.RELEASE_LOCK_WAIT,
                lock_timeout=settings.MIGRATION_LOCK_TIMEOUT,
            ) as pid:
                migrations_run(
                    run=functools.partial(self._migrate, *args, **options),
                    connection=connection,
                    pid=pid,
                    lock_timeout=settings.MIGRATION_LOCK_TIMEOUT,
                    retries=settings.MIGRATION_LOCK_RETRIES,
                    delay=settings.MIGRATION_RETRY_DELAY,
                )
        except ReleaseBlocked as exc:
            raise CommandError(str(exc)) from None

    def _migrate(self, *args, **options) -> None:
        try:
            super().handle(*args, **options)
        except DatabaseError:
            if self._line_open:  # "  Applying x..." waits for its " OK"; end the line before the log says why
                self.stdout.write(" failed")
                self._line_open = False
            raise

    def migration_progress_callback(self, action, migration=None, fake=False):
        super().migration_progress_callback(action, migration, fake)
        self._line_open = self.verbosity >= 1 and action in {"apply_start", "unapply_start", "render_start"}
