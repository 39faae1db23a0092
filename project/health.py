"""Liveness and readiness probes for the ``web`` process type.

``/health`` is liveness: it touches no backing service, so a slow database never gets a
healthy web process restarted. ``/ready`` is readiness: PostgreSQL and Redis answer within
their connect timeouts and no migration is unapplied; otherwise 503 with a JSON body naming
each failed check (Kubernetes probe semantics,
https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/).
"""

import logging

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from project.lifecycle import STOPPING
from project.preflight import database_problem, first_line, redis_problem

logger = logging.getLogger(__name__)


@require_safe
@never_cache
def liveness(request: HttpRequest) -> JsonResponse:
    """Return 200 ``{"status": "ok"}`` without touching any backing service."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    if problem := database_problem(close=False):
        return problem
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        return f"{len(plan)} unapplied migration(s), first {plan[0][0].app_label}.{plan[0][0].name}"
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
    for name, check in (("database", _check_database), ("redis", redis_problem)):
        try:
            problem = check()
        except Exception as exc:  # any other failure of a backing service also means "not ready"
            problem = first_line(exc)
        if problem:
            logger.warning("readiness check %s failed: %s", name, problem)
        checks[name] = problem or "ok"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
