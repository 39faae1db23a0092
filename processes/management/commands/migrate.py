"""Django's ``migrate``, guarded for the release phase: one release at a time, short lock waits.

Procfile: ``release: exec python manage.py migrate --noinput``. It applies the same migrations
inside processes.release's guards and exits 1 with one line naming the session that blocks it. A
one-off with no signal handler of its own: SIGTERM or SIGINT ends it, and the migration in progress
rolls back with its session. Documented in docs/releases.md#the-release-phase.
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
    """Django's migrate, which it replaces: an app's command wins over Django's own of the same name."""

    help = (
        "Apply the migrations as the release phase: one release at a time, lock waits bounded by "
        "MIGRATION_LOCK_TIMEOUT seconds and retried; exit 1 with one line naming what blocks it."
    )

    def execute(self, *args, **options):
        # With LOG_FORMAT=json the progress lines ("Applying orders.0007_order_request_id... OK") become
        # log lines of the ``release`` logger: the release phase writes JSON lines like every process type.
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
        # --plan and --check only read: nothing to guard.
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
