"""Expand and contract: which migrations the release phase may apply while the previous version runs.

An *expand* migration leaves a schema that the previous version still works with; a *contract*
migration (a drop, a rename, NOT NULL without a database default, a type change, a constraint
validated in place) does not, so it runs only after the rollout, in the post-deploy step, and says
so with ``contract = True`` on its Migration class. The operations are told apart by the SQL they
generate, with django-migration-linter's analyser (its backward-incompatible checks). Documented in
docs/releases.md#expand-and-contract.
"""

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import RemoveField, RenameField, RenameModel
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.migration import Migration
from django.db.models import NOT_PROVIDED
from django_migration_linter.sql_analyser import analyse_sql_statements
from django_migration_linter.sql_analyser.postgresql import PostgresqlAnalyser

from core.health import migration_is_contract, waiting_for_post_deploy
from core.releases import registered_processes
from processes.procfile import formation_types
from processes.worker import Worker, worker_release

# Migrations that shipped before the release phase refused contract steps, which every database
# of this project has long applied: a release applies them only to a new database, where no
# previous version runs. Each would be refused today (NOT NULL without a database default on a
# table that the previous version's worker inserts into inside the order transaction).
APPLIED_EVERYWHERE = frozenset(
    {
        ("mailer", "0004_outbox_unsettled_attempts_gave_up"),
        ("orders", "0005_product_stock"),
        ("orders", "0006_orderstatuschange_actor"),
    }
)


@dataclass(frozen=True)
class ContractStep:
    """One operation of a migration that the previous version cannot run against.

    ``operation`` is Django's description of it ("Add field note to order"), ``problem`` the
    linter's ("NOT NULL constraint on columns"), ``where`` the table and column when it names them.
    """

    app_label: str
    migration: str
    operation: str
    problem: str
    where: str

    def describe(self) -> str:
        """Return the step in one line: ``orders.0008_order_note: Add field note to order (NOT NULL …)``."""
        where = f" on {self.where}" if self.where else ""
        return f"{self.app_label}.{self.migration}: {self.operation} ({self.problem}{where})"


def contract_steps(
    *, migration: Migration, loader: MigrationLoader, connection: BaseDatabaseWrapper
) -> list[ContractStep]:
    """Return the operations of ``migration`` that are contract steps (an empty list for an expand one).

    Each operation's SQL is collected (nothing is executed: Django's ``collect_sql`` schema editor,
    as ``sqlmigrate`` does) from the project state before it, and analysed on its own. Operations
    that do not reduce to SQL (RunPython) are not analysed. Migrations in APPLIED_EVERYWHERE give [].
    """
    if (migration.app_label, migration.name) in APPLIED_EVERYWHERE:
        return []
    state = loader.project_state((migration.app_label, migration.name), at_end=False)
    steps = []
    for operation in migration.operations:
        after = state.clone()
        operation.state_forwards(migration.app_label, after)
        if operation.reduces_to_sql:
            with connection.schema_editor(collect_sql=True, atomic=migration.atomic) as editor:
                operation.database_forwards(migration.app_label, editor, state, after)
            errors, _ignored, _warnings = analyse_sql_statements(PostgresqlAnalyser, editor.collected_sql)
            problems = [
                (issue.message, ".".join(part for part in (issue.table, issue.column) if part)) for issue in errors
            ]
            if not problems and _drops_a_required_default(operation, editor.collected_sql, migration.app_label, after):
                problems.append((DROP_REQUIRED_DEFAULT, ""))
            steps += [
                ContractStep(
                    app_label=migration.app_label,
                    migration=migration.name,
                    operation=operation.describe(),
                    problem=problem,
                    where=where,
                )
                for problem, where in problems
            ]
        state = after
    return steps


# What django-migration-linter does not flag: ``ALTER COLUMN … DROP DEFAULT`` on a NOT NULL column.
# The previous version's INSERTs leave that column out and rely on the default, so they fail.
DROP_REQUIRED_DEFAULT = "DROPPING the database default of a NOT NULL column"
_DROP_DEFAULT = re.compile(r"ALTER COLUMN .* DROP DEFAULT", re.IGNORECASE)


def _drops_a_required_default(operation, sql: list[str], app_label: str, after) -> bool:
    """Return whether ``operation`` drops a column's database default while the column is NOT NULL.

    A field operation (AlterField) is judged by its field in ``after`` (the state once it ran); SQL
    of any other operation (RunSQL) that drops a default is taken as dropping a required one, since
    nothing says the column may be null.
    """
    if not any(_DROP_DEFAULT.search(statement) for statement in sql):
        return False
    model_name, field_name = getattr(operation, "model_name", None), getattr(operation, "name", None)
    if model_name and field_name:
        with contextlib.suppress(KeyError, LookupError):
            return not after.models[app_label, model_name.lower()].fields[field_name].null
    return True


# Contract operations that cannot wait for the post-deploy step either, since the new version runs
# against the schema without them for the whole rollout.
RENAME_CANNOT_WAIT = (
    "a rename, which the new version needs from its start: add, backfill, switch, then drop across releases"
)
REQUIRED_DROP_CANNOT_WAIT = (
    "a NOT NULL column without a database default, which the new version's INSERTs leave out until it is "
    "dropped: make it nullable (or give it a db_default) in an expand migration first"
)


def steps_that_cannot_wait(*, migration: Migration, loader: MigrationLoader) -> list[ContractStep]:
    """Return the operations of ``migration`` that no release can run, not even in its post-deploy step.

    A rename (RenameField, RenameModel) leaves the new version without the name it uses until the
    post-deploy step; dropping a NOT NULL column that has no database default (RemoveField) leaves
    it a column its INSERTs do not fill. Both break the new version for the whole rollout, so they
    are done across releases instead (docs/releases.md#expand-and-contract).
    """
    state = loader.project_state((migration.app_label, migration.name), at_end=False)
    steps = []
    for operation in migration.operations:
        problem = None
        if isinstance(operation, RenameField | RenameModel):
            problem = RENAME_CANNOT_WAIT
        elif isinstance(operation, RemoveField):
            with contextlib.suppress(KeyError, LookupError):
                field = state.models[migration.app_label, operation.model_name_lower].fields[operation.name]
                if not field.many_to_many and not field.null and field.db_default is NOT_PROVIDED:
                    problem = REQUIRED_DROP_CANNOT_WAIT
        if problem:
            steps.append(
                ContractStep(
                    app_label=migration.app_label,
                    migration=migration.name,
                    operation=operation.describe(),
                    problem=problem,
                    where="",
                )
            )
        after = state.clone()
        operation.state_forwards(migration.app_label, after)
        state = after
    return steps


def unmarked_contract_steps(
    *, migrations: Iterable[Migration], loader: MigrationLoader, connection: BaseDatabaseWrapper
) -> list[ContractStep]:
    """Return the contract steps of those ``migrations`` that are not marked ``contract = True``."""
    return [
        step
        for migration in migrations
        if not migration_is_contract(migration)
        for step in contract_steps(migration=migration, loader=loader, connection=connection)
    ]


def deferred(plan: list[tuple[Migration, bool]], graph, applied: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Return the keys of the unapplied forward migrations of ``plan`` that wait for the post-deploy step.

    The rule is core.health.waiting_for_post_deploy's: the migrations marked contract, and every
    one that depends on one of them (``graph``, the loader's MigrationGraph, knows the
    dependencies). Migrations in ``applied`` (keys) never wait.
    """
    applied = set(applied)
    keys = [(migration.app_label, migration.name) for migration, backwards in plan if not backwards]
    return waiting_for_post_deploy(
        (key, migration_is_contract(graph.nodes[key]), [parent.key for parent in graph.node_map[key].parents])
        for key in keys
        if key not in applied
    )


def _session_sightings(*, connection: BaseDatabaseWrapper, types: set[str], release: str) -> list[str]:
    """Return a line for each PostgreSQL session of this database named after a long-running type
    of another release than ``release``, or after no release (see other_releases)."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name, coalesce(host(client_addr), 'local socket') FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid"
        )
        for pid, name, client in cursor.fetchall():
            parts = (name or "").split("/")
            if parts == ["formation"]:
                found.append(f"a PostgreSQL session of a release that does not name itself (pid {pid} from {client})")
            elif len(parts) in (3, 4) and parts[0] == "formation":
                # formation/<instance>/<release>[/<pid>@<host>]; the instance is a type or a
                # platform's name of it (web.1).
                kind = parts[1].split(".")[0]
                if kind in types and parts[2] != release:
                    found.append(f"{parts[1]} of release {parts[2]} (PostgreSQL session pid {pid} from {client})")
    return found


def other_releases(*, release: str, connection: BaseDatabaseWrapper, redis, sessions: bool = True) -> list[str]:
    """Return one line for each live process of the formation that runs another release than ``release``.

    Seen three ways, each what the processes themselves leave: the registrations of web, worker,
    scheduler and mailer processes in ``redis`` (core.releases), PostgreSQL sessions whose
    ``application_name`` is ``formation/<type>/<release>/<pid>@<host>`` for a long-running Procfile
    type (the type may be a platform's instance name, ``web.1``; versions before named no pid and
    host), or the bare ``formation`` of a version before releases were named; and RQ workers registered in
    ``redis`` (a redis.Redis) whose name carries another release, or none. One-off processes (a
    shell, a release, the tests) never count. Without ``sessions`` PostgreSQL's sessions are not
    asked: behind a transaction pooler they are the pooler's server connections, each named after
    the client that used it last, so an idle one still names a release that is gone. Raise
    DatabaseError or RedisError when either cannot be asked: the caller cannot tell, so it must not go on.
    """
    types = set(formation_types())
    found = []
    if sessions:
        found += _session_sightings(connection=connection, types=types, release=release)
    for process in registered_processes(redis):
        if process.get("type") in types and process.get("release") != release:
            where = f"pid {process.get('pid')} on {process.get('host')}"
            found.append(f"{process['type']} of release {process.get('release')} ({where})")
    for worker in Worker.all(connection=redis):
        other = worker_release(worker.name)
        if other != release:
            of = f"release {other}" if other else "a release that does not name itself"
            found.append(f"worker of {of} (RQ worker {worker.name} on {worker.hostname}, pid {worker.pid})")
    return found
