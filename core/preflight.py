"""Start-up checks of the backing services for the long-running process types.

A process type that needs PostgreSQL or Redis checks them once at start: when one is not
reachable it logs one line saying so and retries every second, and after
``STARTUP_RETRY_SECONDS`` (default 30) gives up with ServiceUnavailable (one line; the
commands turn it into exit status 1). Each attempt is bounded by the connect timeouts
(DATABASE_CONNECT_TIMEOUT, REDIS_CONNECT_TIMEOUT), so a start never hangs.
"""

import contextlib
import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from redis.exceptions import RedisError

from core.queues import DEFAULT_QUEUE, redis_connection

logger = logging.getLogger("preflight")


class ServiceUnavailable(Exception):
    """A backing service stayed unreachable for the whole start-up retry period."""


def first_line(exc: BaseException) -> str:
    """Return ``"ExceptionType: first line of its message"`` (psycopg's messages span several lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def database_problem(*, close: bool = True) -> str | None:
    """Return why PostgreSQL (DATABASE_URL) cannot be reached now, in one line, or None.

    With ``close`` (the start-up case) the connection is closed afterwards: a process never
    carries it into a fork (RQ's work horse) or a long wait. Readiness keeps it for reuse.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        return first_line(exc)
    finally:
        if close:
            connection.close()
    return None


def redis_problem() -> str | None:
    """Return why Redis (REDIS_URL) cannot be reached now, in one line, or None."""
    try:
        redis_connection(DEFAULT_QUEUE).ping()
    except RedisError as exc:
        return first_line(exc)
    return None


def redis_policy_problem() -> str | None:
    """Return one line naming Redis's ``maxmemory-policy`` when it is not ``noeviction``, else None.

    RQ keeps its queues and jobs as ordinary keys; any other policy lets Redis evict them once
    ``maxmemory`` is reached (RQ's docs; rq/rq#1280). Asked with ``CONFIG GET``, which managed Redis
    services may disable, then ``INFO memory`` (its ``maxmemory_policy``). None as well when neither
    is answerable (logged): the check must not refuse a Redis that merely hides its configuration.
    Raises nothing; an unreachable Redis is redis_problem's to report.
    """
    client = redis_connection(DEFAULT_QUEUE)
    policy = None
    with contextlib.suppress(RedisError):  # CONFIG renamed or disabled: INFO below
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    if policy is None:
        try:
            policy = client.info("memory").get("maxmemory_policy")
        except RedisError as exc:
            logger.warning("Redis (REDIS_URL): maxmemory-policy not answerable (%s); not checked", first_line(exc))
            return None
    if policy is None or policy == "noeviction":
        return None
    return f"Redis (REDIS_URL): maxmemory-policy is {policy}; RQ needs noeviction (an evicting Redis drops queued jobs)"


def service_checks(*, database: bool = True, redis: bool = True) -> dict[str, Callable[[], str | None]]:
    """Return {label naming the service and its variable: its ``*_problem`` function} for the
    requested services; the label is how every start-up line names the service."""
    checks: dict[str, Callable[[], str | None]] = {}
    if database:
        checks["PostgreSQL (DATABASE_URL)"] = database_problem
    if redis:
        checks["Redis (REDIS_URL)"] = redis_problem
    return checks


def wait_for_services(*, database: bool = False, redis: bool = False, retry_for: float | None = None) -> None:
    """Return once the requested services answer; retry for ``retry_for`` seconds (default setting).

    Log one warning line per unreachable service, the first time only.
    Raise ServiceUnavailable naming the variable and the last error when time runs out, and at once
    (one line, redis_policy_problem) when Redis answers with a maxmemory-policy other than noeviction.
    """
    retry_for = settings.STARTUP_RETRY_SECONDS if retry_for is None else retry_for
    checks = service_checks(database=database, redis=redis)
    deadline = time.monotonic() + retry_for
    reported: set[str] = set()
    while True:
        problems = {name: problem for name, check in checks.items() if (problem := check())}
        if not problems:
            if reported:
                logger.info("start-up: %s reachable now", ", ".join(sorted(reported)))
            if redis and (policy := redis_policy_problem()):
                raise ServiceUnavailable(policy)
            return
        for name, problem in problems.items():
            if name not in reported:
                logger.warning("start-up: %s unreachable (%s); retrying for up to %gs", name, problem, retry_for)
                reported.add(name)
        if time.monotonic() >= deadline:
            summary = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
            raise ServiceUnavailable(f"unreachable after {retry_for:g}s: {summary}")
        time.sleep(1)
