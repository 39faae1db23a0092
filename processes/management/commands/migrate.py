"""Django's ``migrate``, guarded for the release phase: one release at a time, short lock waits.

Procfile: ``release: exec python manage.py migrate --noinput``. It applies the same migrations
inside processes.release's guards and exits 1 with one line naming the session that blocks it. A
one-off with no signal handler of its own: SIGTERM or SIGINT ends it, and the migration in progress
rolls back with its session. Documented in docs/releases.md#the-release-phase.
"""

import contextlib
import functools
import logging
from collections.abc import Iterator

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from redis.exceptions import RedisError

from core.health import migration_is_contract
from core.logs import LogLines
from core.preflight import first_line
from core.queues import redis_connection
from processes.release import ReleaseBlocked, migrations_run, release_session, role_timeout_set
from processes.stages import ContractStep, deferred, other_releases, steps_that_cannot_wait, unmarked_contract_steps

logger = logging.getLogger("release")


class ContractRefused(Exception):
    """The release phase met a contract step that is not marked as one; nothing was applied."""

    def __init__(self, steps: list[ContractStep]):
        self.steps = steps
        more = f" (and {len(steps) - 1} more)" if len(steps) > 1 else ""
        super().__init__(
            f"release: {steps[0].describe()}{more} is a contract step, which the release still running cannot "
            f"live with; nothing was applied. Make it an expand step, or mark its Migration contract = True to "
            f"run it in the post-deploy step (docs/releases.md#expand-and-contract)"
        )


class ContractCannotWait(ContractRefused):
    """The release phase met a marked contract step that would break the new version until the
    post-deploy step runs (a rename, or a drop of a required column); nothing was applied."""

    def __init__(self, steps: list[ContractStep]):
        self.steps = steps
        more = f" (and {len(steps) - 1} more)" if len(steps) > 1 else ""
        Exception.__init__(
            self,
            f"release: {steps[0].app_label}.{steps[0].migration}: {steps[0].operation}{more} cannot wait for the "
            f"post-deploy step either: it is {steps[0].problem}; nothing was applied "
            f"(docs/releases.md#expand-and-contract)",
        )


class StagedExecutor(MigrationExecutor):
    """Django's MigrationExecutor whose plans leave the contract migrations to the post-deploy step.

    In the release phase (``contract`` False) a plan loses the migrations marked contract and those
    that depend on them, and an unmarked contract step raises ContractRefused before anything is
    applied. A database with no migration applied yet has no previous release running: its plans
    are Django's, whole. The post-deploy step (``contract`` True) plans as Django does.
    """

    contract = False

    def migration_plan(self, targets, clean_start=False):
        plan = super().migration_plan(targets, clean_start=clean_start)
        applied = self.loader.applied_migrations
        if self.contract or not applied:
            return plan
        if not clean_start:  # the plan to apply; the clean-start one only renders states
            forward = [migration for migration, backwards in plan if not backwards]
            if steps := unmarked_contract_steps(migrations=forward, loader=self.loader, connection=self.connection):
                raise ContractRefused(steps)
            marked = [migration for migration in forward if migration_is_contract(migration)]
            if steps := [step for m in marked for step in steps_that_cannot_wait(migration=m, loader=self.loader)]:
                raise ContractCannotWait(steps)
        waiting = deferred(plan, self.loader.graph, applied)
        if waiting and not clean_start:
            logger.info(
                "release: %d migration(s) wait for the post-deploy step (manage.py migrate --contract), "
                "contract ones and those after them: %s",
                len(waiting),
                ", ".join(f"{app}.{name}" for app, name in sorted(waiting)),
            )
        return [
            (migration, backwards)
            for migration, backwards in plan
            if (migration.app_label, migration.name) not in waiting
        ]


@contextlib.contextmanager
def staged_executor(*, contract: bool) -> Iterator[None]:
    """Make Django's migrate command plan with StagedExecutor (``contract`` as given) while inside.

    Django's command makes its executor by the name MigrationExecutor in its own module; that name
    is swapped for the duration and restored on the way out.
    """
    executor = type("StagedExecutor", (StagedExecutor,), {"contract": contract})
    original = migrate.MigrationExecutor
    migrate.MigrationExecutor = executor
    try:
        yield
    finally:
        migrate.MigrationExecutor = original


class Command(migrate.Command):
    """Django's migrate, which it replaces: an app's command wins over Django's own of the same name."""

    help = (
        "Apply the migrations as the release phase: expand steps only (a contract step is left to "
        "--contract, or refused when unmarked), one release at a time, lock waits bounded by "
        "MIGRATION_LOCK_TIMEOUT seconds and retried; exit 1 with one line naming what blocks it."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        # Behind a transaction pooler the release needs PostgreSQL itself: its advisory lock and
        # session settings would otherwise land on whichever server connection the pooler lends.
        if "direct" in settings.DATABASES:
            parser.set_defaults(database="direct")
        parser.add_argument(
            "--contract",
            action="store_true",
            help="The post-deploy step: apply the contract migrations too, once no process of another release runs.",
        )
        parser.add_argument(
            "--ignore-other-releases",
            action="store_true",
            help="With --contract: go on although processes of another release still run (they may then fail).",
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
        """Run Django's migrate inside the release guards, expand steps only unless ``--contract``.

        Raise CommandError (one line) when blocked by another session, when an unmarked contract
        step is planned (nothing applied), or, with ``--contract``, while processes of another
        release still run (unless ``--ignore-other-releases``).
        """
        connection = connections[options["database"]]
        contract = options["contract"]
        try:
            # --plan and --check only read: nothing to guard.
            if options["plan"] or options["check_unapplied"] or connection.vendor != "postgresql":
                with staged_executor(contract=contract):
                    return super().handle(*args, **options)
            if settings.DATABASE_POOLED and options["database"] != "direct":
                raise CommandError(
                    "release: DATABASE_URL goes through a transaction pooler (DATABASE_POOLED), where the release "
                    "lock and its session settings do not hold; set DATABASE_DIRECT_URL to PostgreSQL itself "
                    "(docs/connections.md#pool-it)"
                )
            self._line_open = False
            with release_session(
                connection=connection,
                lock_wait=settings.RELEASE_LOCK_WAIT,
                lock_timeout=settings.MIGRATION_LOCK_TIMEOUT,
            ) as pid:
                if contract and not options["ignore_other_releases"]:
                    self._refuse_while_other_releases_run(connection)
                if settings.DATABASE_POOLED:
                    self._role_timeout_set(connection)
                with staged_executor(contract=contract):
                    migrations_run(
                        run=functools.partial(self._migrate, *args, **options),
                        connection=connection,
                        pid=pid,
                        lock_timeout=settings.MIGRATION_LOCK_TIMEOUT,
                        retries=settings.MIGRATION_LOCK_RETRIES,
                        delay=settings.MIGRATION_RETRY_DELAY,
                    )
        except (ReleaseBlocked, ContractRefused) as exc:
            raise CommandError(str(exc)) from None

    def _role_timeout_set(self, connection) -> None:
        role = settings.DATABASES["default"].get("USER")
        if not role:  # the URL names no user: libpq's default, the one the direct session has too
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_user")
                role = cursor.fetchone()[0]
        if role_timeout_set(connection=connection, role=role, statement_timeout=settings.DATABASE_STATEMENT_TIMEOUT):
            logger.info(
                "release: statement_timeout of role %s is now %g s (DATABASE_STATEMENT_TIMEOUT), for the pooled "
                "connections the pooler opens from now on",
                role,
                settings.DATABASE_STATEMENT_TIMEOUT,
            )

    def _refuse_while_other_releases_run(self, connection) -> None:
        try:
            others = other_releases(
                release=settings.RELEASE,
                connection=connection,
                redis=redis_connection(),
                # Behind a pooler, PostgreSQL's sessions are its server connections, named after
                # whichever client used them last: an idle one names a release long gone.
                sessions=not settings.DATABASE_POOLED,
            )
        except RedisError as exc:
            raise CommandError(
                f"post-deploy: cannot tell which releases still run, Redis did not answer ({first_line(exc)}); "
                f"nothing was applied"
            ) from None
        if others:
            more = f" ({len(others) - 1} more sighting(s) of processes of another release)" if len(others) > 1 else ""
            raise CommandError(
                f"post-deploy: {others[0]} still runs{more}, and release {settings.RELEASE} contracts the schema "
                f"it may use; nothing was applied. Rerun once the rollout has replaced it, or pass "
                f"--ignore-other-releases"
            )

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
