"""The twelve-factor checklist as Django system checks (tag ``twelvefactor``).

Run by ``manage.py check --tag twelvefactor`` and, with the deployment-only ones, by
``manage.py check --deploy``. Each has an id (``formation.E0xx``/``W0xx``) and a hint. The
factors are those of https://12factor.net (III config, IV backing services, VI processes,
VII port binding, IX disposability, X dev/prod parity, XII admin processes). The connection
budget (``formation.W001``/``W002``, deploy only) is docs/connections.md#the-check; Redis's
eviction policy (``formation.W030``/``W031``, deploy only) is docs/deployment.md#rediss-eviction-policy.
"""

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import Error as DatabaseError
from django.db.utils import load_backend
from redis.exceptions import RedisError

from core.postgresql import ENGINE as POSTGRESQL_ENGINE
from core.preflight import first_line, redis_policy_problem
from core.queues import DEFAULT_QUEUE, redis_connection
from processes.budget import ServerLimits, over_budget, server_limits
from processes.procfile import PROCFILE, process_commands

TAG = "twelvefactor"
PROCESS_TYPES = ("release", "web", "worker", "scheduler", "mailer")


@register(TAG, Tags.database)
def check_backing_services(app_configs=None, **kwargs) -> list:
    """PostgreSQL with a connect timeout and health checks; Redis queues with a connect timeout; SMTP."""
    return backing_service_problems(
        database=settings.DATABASES["default"], queues=settings.RQ_QUEUES, email_backend=settings.EMAIL_BACKEND
    )


def backing_service_problems(*, database: dict, queues: dict, email_backend: str) -> list:
    """Return the check messages for a database settings dict, RQ_QUEUES and EMAIL_BACKEND."""
    problems = []
    if database.get("ENGINE") not in ("django.db.backends.postgresql", POSTGRESQL_ENGINE):
        problems.append(
            Error(
                "The database engine is not PostgreSQL.",
                hint="Set DATABASE_URL to a postgres:// URL: the same backing service everywhere (factor X).",
                id="formation.E001",
            )
        )
    if not database.get("OPTIONS", {}).get("connect_timeout"):
        problems.append(
            Error(
                "No PostgreSQL connect timeout: a dead database would hang a process.",
                hint="Set OPTIONS['connect_timeout'] (DATABASE_CONNECT_TIMEOUT, seconds).",
                id="formation.E002",
            )
        )
    if not database.get("CONN_HEALTH_CHECKS"):
        problems.append(
            Error(
                "CONN_HEALTH_CHECKS is off: a restarted database fails the first request on each stale connection.",
                hint="Set CONN_HEALTH_CHECKS=1 (Django 4.1+, checks a reused connection before use).",
                id="formation.E003",
            )
        )
    for name, queue in queues.items():
        url = urlsplit(queue.get("URL", ""))
        if url.scheme not in {"redis", "rediss", "unix"}:
            problems.append(
                Error(
                    f"RQ queue {name!r} is not on Redis.", hint="Set REDIS_URL to a redis:// URL.", id="formation.E004"
                )
            )
        elif "socket_connect_timeout" not in parse_qs(url.query):
            problems.append(
                Error(
                    f"RQ queue {name!r} has no Redis connect timeout.",
                    hint="Add socket_connect_timeout to the queue URL (REDIS_CONNECT_TIMEOUT, seconds).",
                    id="formation.E010",
                )
            )
    if email_backend != "django.core.mail.backends.smtp.EmailBackend":
        problems.append(
            Error(
                "Email does not go over SMTP.",
                hint="Use Django's SMTP backend and EMAIL_URL=smtp://…, in development too (a sink such as Mailpit).",
                id="formation.E005",
            )
        )
    return problems


@register(TAG, Tags.security, deploy=True)
def check_debug_off(app_configs=None, **kwargs) -> list:
    """DEBUG is off in a deployment."""
    if settings.DEBUG:
        return [Error("DEBUG is on.", hint="Unset DEBUG (it is off by default).", id="formation.E006")]
    return []


@register(TAG)
def check_procfile(app_configs=None, **kwargs) -> list:
    """The Procfile declares every process type, binds web to $PORT, and migrates only in release."""
    return procfile_problems(PROCFILE)


def procfile_problems(path: Path) -> list:
    """Return the check messages for the Procfile at ``path``."""
    try:
        processes = process_commands(path)
    except OSError as exc:
        return [Error(f"No readable Procfile at {path}: {exc}", hint="Restore the Procfile.", id="formation.E011")]
    except ValueError as exc:
        return [
            Error(f"The Procfile at {path} is malformed: {exc}.", hint="Declare each type once.", id="formation.E012")
        ]
    problems = []
    missing = [name for name in PROCESS_TYPES if name not in processes]
    if missing:
        problems.append(
            Error(
                f"The Procfile lacks process type(s): {', '.join(missing)}.",
                hint=f"Declare each of {', '.join(PROCESS_TYPES)} (factor VIII, concurrency by process type).",
                id="formation.E007",
            )
        )
    if "web" in processes and not re.search(r"\$(PORT|\{PORT\})\b", processes["web"]):
        problems.append(
            Error(
                "The web process does not bind to $PORT.",
                hint="Bind 0.0.0.0:$PORT, the port the platform assigns (factor VII).",
                id="formation.E008",
            )
        )
    for name, command in processes.items():
        if name != "release" and re.search(r"\bmigrate\b", command):
            problems.append(
                Error(
                    f"Process type {name!r} runs migrations at start.",
                    hint="Migrate only in the release phase: a start must be fast and safe to repeat (factor IX).",
                    id="formation.E009",
                )
            )
    return problems


@register(TAG, Tags.database, deploy=True)
def check_connection_budget(app_configs=None, **kwargs) -> list:
    """The formation at its largest fits PostgreSQL's max_connections, less the reserves and the headroom."""
    # PostgreSQL itself, never the pooler: max_connections is the server's.
    alias = "direct" if "direct" in settings.DATABASES else DEFAULT_DB_ALIAS
    return connection_budget_problems(
        formation=settings.FORMATION,
        web_concurrency=settings.WEB_SERVER["workers"],
        pool_size=(settings.DATABASE_POOL_SIZE or None) if settings.DATABASE_POOLED else None,
        headroom=settings.DATABASE_CONNECTION_HEADROOM,
        database=connections[alias].settings_dict,
        gateway_direct=settings.DATABASE_POOLED and not settings.DATABASE_GATEWAY_POOLED,
    )


def connection_budget_problems(
    *,
    formation: dict[str, int],
    web_concurrency: int,
    pool_size: int | None,
    headroom: int,
    database: dict,
    gateway_direct: bool = False,
) -> list:
    """Return the check messages for ``formation`` against the server of ``database`` (a complete
    Django DATABASES entry): formation.W001 naming the numbers when its peak is over budget
    (processes.budget.over_budget), formation.W002 when the server cannot be asked; never raise.

    The server is asked through a connection of its own, closed at once, outside Django's
    connection handling (a check must not leave a connection behind in the process it runs in).
    """
    try:
        limits = _ask_server_limits(database)
    except DatabaseError as exc:
        return [
            Warning(
                f"Could not ask PostgreSQL for max_connections ({first_line(exc)}): "
                "the connection budget is not checked.",
                hint="Run the check where the database is reachable, e.g. in a one-off of the release's image.",
                id="formation.W002",
            )
        ]
    message = over_budget(
        formation,
        web_concurrency=web_concurrency,
        pool_size=pool_size,
        limits=limits,
        headroom=headroom,
        gateway_direct=gateway_direct,
    )
    if message is None:
        return []
    return [
        Warning(
            message,
            hint=(
                "Scale down, lower WEB_CONCURRENCY, pool through PgBouncer (DATABASE_POOL_SIZE) or raise "
                "max_connections (docs/connections.md#the-check)."
            ),
            id="formation.W001",
        )
    ]


def _ask_server_limits(database: dict) -> ServerLimits:
    """Return the ServerLimits of ``database``'s server; raise django.db.Error when it cannot be asked."""
    wrapper = load_backend(database["ENGINE"]).DatabaseWrapper(database)
    with wrapper.wrap_database_errors:
        raw = wrapper.get_new_connection(wrapper.get_connection_params())
        try:
            return server_limits(raw)
        finally:
            raw.close()


@register(TAG, Tags.database, deploy=True)
def check_redis_eviction_policy(app_configs=None, **kwargs) -> list:
    """Redis keeps queued jobs: its maxmemory-policy is noeviction (core.preflight.redis_policy_problem)."""
    return redis_policy_problems()


def redis_policy_problems() -> list:
    """Return the check messages for the queues' Redis (settings.RQ_QUEUES' default queue):
    formation.W030 naming its ``maxmemory-policy`` when it is not ``noeviction`` (any other policy
    lets Redis evict RQ's queues and jobs at ``maxmemory``: RQ's docs, rq/rq#1280), formation.W031
    when Redis does not answer; never raise. A Redis that answers but hides its configuration
    (CONFIG and INFO disabled) is not reported: the worker and scheduler accept it too.
    """
    try:
        redis_connection(DEFAULT_QUEUE).ping()
    except RedisError as exc:
        return [
            Warning(
                f"Could not ask Redis (REDIS_URL) for its maxmemory-policy ({first_line(exc)}): not checked.",
                hint="Run the check where Redis is reachable, e.g. in a one-off of the release's image.",
                id="formation.W031",
            )
        ]
    problem = redis_policy_problem()
    if problem is None:
        return []
    return [
        Warning(
            problem,
            hint=(
                "Set maxmemory-policy noeviction (CONFIG SET, redis.conf or the managed service's parameters; "
                "docs/deployment.md#rediss-eviction-policy): the worker and scheduler refuse to start until then."
            ),
            id="formation.W030",
        )
    ]
