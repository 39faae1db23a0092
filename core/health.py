"""Liveness and readiness probes for the ``web`` process type.

``/health`` is liveness: it touches no backing service, so a slow database never gets a
healthy web process restarted. ``/ready`` is readiness: PostgreSQL and Redis answer within
their connect timeouts and no expand migration is unapplied; otherwise 503 with a JSON body naming
each failed check (Kubernetes probe semantics,
https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/).
"""

import functools
import logging
from collections.abc import Iterable

from django.db import DEFAULT_DB_ALIAS, ProgrammingError, connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from core.lifecycle import STOPPING
from core.preflight import database_problem, first_line, redis_policy_problem, redis_problem

logger = logging.getLogger(__name__)


@require_safe
@never_cache
def liveness(request: HttpRequest) -> JsonResponse:
    """Return 200 ``{"status": "ok"}`` without touching any backing service."""
    return JsonResponse({"status": "ok"})


def migration_is_contract(migration) -> bool:
    """Return whether ``migration`` (a Migration) is marked as a contract step (``contract = True``
    on its class): it runs in the post-deploy step, after the rollout, never in the release phase
    (processes.stages; docs/releases.md#expand-and-contract)."""
    return bool(getattr(migration, "contract", False))


# One migration of the code as /ready sees it: its key, the keys it replaces (a squashed
# migration), whether it is marked contract, and the keys of the migrations it depends on.
_DiskMigration = tuple[tuple[str, str], tuple[tuple[str, str], ...], bool, tuple[tuple[str, str], ...]]


@functools.cache
def _migrations_on_disk() -> tuple[_DiskMigration, ...]:
    """Return every migration of the code, in the order ``migrate`` applies them:
    ``((app_label, name), (the (app_label, name) it replaces, ...), contract, (its parents' keys, ...))`` each.

    Read once per process: the files cannot change under a running process, and reading them
    (importing every migration module, building the graph) is most of a ``MigrationExecutor``'s
    cost — it made ``/ready`` ~14× slower than a one-query view (measured by `make bench`). Built as
    ``migrate`` on an empty database would see it (no connection): a squashed migration stands
    for the ones it replaces.
    """
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    plan: dict[tuple[str, str], _DiskMigration] = {}
    for leaf in graph.leaf_nodes():
        for key in graph.forwards_plan(leaf):
            if key not in plan:
                migration = graph.nodes[key]
                parents = tuple(parent.key for parent in graph.node_map[key].parents)
                plan[key] = (key, tuple(migration.replaces), migration_is_contract(migration), parents)
    return tuple(plan.values())


def unapplied_migrations(connection) -> list[tuple[str, str]]:
    """Return the ``(app_label, name)`` of the code's migrations not applied in ``connection``'s
    database, in ``migrate``'s order (all of them when the database has no django_migrations
    table yet); one query.

    A squashed migration counts as applied when it, or every migration it replaces, is recorded
    (Django's MigrationLoader rule, django/db/migrations/loader.py ``build_graph``). Unapplied
    contract migrations, and the unapplied ones that depend on one, are left out: they wait for the
    post-deploy step, after the rollout that needs this process ready. A migration that depends on
    a contract migration already applied waits for nothing.
    """
    try:
        # The recorder's applied_migrations() first lists every table to see whether its own
        # exists: a second round trip per probe. Asked directly, a missing table is the error.
        applied = set(MigrationRecorder(connection).migration_qs.values_list("app", "name"))
    except ProgrammingError:  # no django_migrations table: nothing applied yet
        applied = set()
    unapplied = [
        (key, contract, parents)
        for key, replaces, contract, parents in _migrations_on_disk()
        if key not in applied and not (replaces and all(old in applied for old in replaces))
    ]
    waiting = waiting_for_post_deploy(unapplied)
    return [key for key, _contract, _parents in unapplied if key not in waiting]


def waiting_for_post_deploy(
    unapplied: Iterable[tuple[tuple[str, str], bool, Iterable[tuple[str, str]]]],
) -> set[tuple[str, str]]:
    """Return the keys of the ``unapplied`` migrations that wait for the post-deploy step.

    ``unapplied`` is ``(key, contract, its parents' keys)`` for each unapplied migration, in the
    order ``migrate`` applies them. A migration waits when it is marked contract, or depends on one
    that waits: it cannot run before what it depends on. The one rule of the release phase's plan
    (processes.stages.deferred) and of ``/ready``.
    """
    waiting: set[tuple[str, str]] = set()
    for key, contract, parents in unapplied:
        if contract or any(parent in waiting for parent in parents):
            waiting.add(key)
    return waiting


def write_problem(connection) -> str | None:
    """Return why PostgreSQL would refuse writes on ``connection`` (a Django connection), in one
    line, or None: a hot standby (``pg_is_in_recovery()``) or ``transaction_read_only`` on (a
    provider's disk-full mode sets ``default_transaction_read_only``). One round trip; raises
    django.db.DatabaseError if the query fails. Functions: PostgreSQL docs, "System Administration
    Functions" (pg_is_in_recovery) and "Client Connection Defaults" (default_transaction_read_only).
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
        in_recovery, read_only = cursor.fetchone()
    if in_recovery:
        return "read-only: PostgreSQL is a standby in recovery (pg_is_in_recovery), refusing writes"
    if read_only == "on":
        return "read-only: PostgreSQL refuses writes (transaction_read_only = on)"
    return None


def _check_database() -> str | None:
    if problem := database_problem(close=False):
        return problem
    if problem := write_problem(connections[DEFAULT_DB_ALIAS]):
        return problem
    plan = unapplied_migrations(connections[DEFAULT_DB_ALIAS])
    if plan:
        app_label, name = plan[0]
        return f"{len(plan)} unapplied migration(s), first {app_label}.{name}"
    return None


@require_safe
@never_cache
def readiness(request: HttpRequest) -> JsonResponse:
    """Return 200 when PostgreSQL and Redis answer and migrations are applied, else 503.

    Body: ``{"status": "ok"|"unavailable", "checks": {"database": "ok"|reason, "redis": "ok"|reason}}``;
    ``{"status": "stopping", "checks": {}}`` with 503 once this web worker is shutting down (SIGTERM).
    """
    if STOPPING.is_set():
        return JsonResponse({"status": "stopping", "checks": {}}, status=503)
    checks: dict[str, str] = {}
    # Not ready either while Redis may evict the queue (maxmemory-policy other than noeviction).
    redis_check = lambda: redis_problem() or redis_policy_problem()  # noqa: E731
    for name, check in (("database", _check_database), ("redis", redis_check)):
        try:
            problem = check()
        except Exception as exc:  # any other failure of a backing service also means "not ready"
            problem = first_line(exc)
        if problem:
            logger.warning("readiness check %s failed: %s", name, problem)
        checks[name] = problem or "ok"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
