"""Liveness and readiness of a worker, scheduler or mailer process, for orchestrators' HTTP probes.

The process's METRICS_PORT server (core.metrics.metrics_serve) answers, besides its metrics:

- ``/health``, liveness: 200 while the heartbeat that the process's own loop records (beat) is at
  most ``max_age`` seconds old, else 503. It asks no backing service, so an outage of PostgreSQL or
  Redis, which the loop waits out and retries, leaves it alive; a loop that is stuck stops beating,
  and a process that is stopped (SIGSTOP) or hung as a whole does not answer at all.
- ``/ready``, readiness: 200 while the backing services the process needs answer within their
  timeouts, else 503 naming what failed.

The heartbeat lives in the process's memory: a beat is one clock read, no file, no service, no
Django started for a probe (an exec probe of ``manage.py probe`` took ~1 s of CPU and 66 MiB each
time). Both answers are JSON, ``{"status": …}`` like web's ``/health`` and ``/ready``
(core.health); neither asks for METRICS_TOKEN: they tell a status and the names of the services,
nothing else. Documented in docs/processes.md#liveness.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core.preflight import first_line

logger = logging.getLogger(__name__)

# time.monotonic() of this process's last beat; its import until the first one.
_last_beat = time.monotonic()
_lock = threading.Lock()


def beat() -> None:
    """Record that this process's main loop made progress now.

    Call it from the loop itself (each pass, each wait, each retry of an unreachable service), never
    from a thread of its own: a beat from a side thread would go on while the loop is stuck.
    """
    global _last_beat
    with _lock:
        _last_beat = time.monotonic()


def heartbeat_age() -> float:
    """Return the seconds since this process's last beat (since this module was imported before the first)."""
    with _lock:
        return time.monotonic() - _last_beat


def database_problem() -> str | None:
    """Return why PostgreSQL (the ``default`` alias) does not answer now or refuses writes (a
    standby, or ``transaction_read_only`` on: core.health.write_problem), in one line, or None.

    Through a pooler the query reaches PostgreSQL itself, where merely connecting would not. The
    connection is this thread's own and is closed afterwards: a probe holds none between two asks.
    """
    from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

    from core.health import write_problem

    connection = connections[DEFAULT_DB_ALIAS]
    try:
        return write_problem(connection)
    except DatabaseError as exc:
        return first_line(exc)
    finally:
        connection.close()


_redis_clients: dict[str, object] = {}


def redis_problem() -> str | None:
    """Return why Redis (settings.REDIS_URL) does not answer PING now, in one line, or None.

    Its own client, whose every command gives up after REDIS_CONNECT_TIMEOUT seconds (the queues'
    clients have no read timeout): a Redis that accepts connections but never answers cannot pile up
    hung probe threads.
    """
    import redis
    from django.conf import settings

    url = settings.REDIS_URL
    try:
        client = _redis_clients.get(url)
        if client is None:
            client = _redis_clients.setdefault(
                url,
                redis.Redis.from_url(
                    url, socket_timeout=settings.REDIS_CONNECT_TIMEOUT, **settings.REDIS_SOCKET_OPTIONS
                ),
            )
        client.ping()
    except redis.RedisError as exc:
        return first_line(exc)
    return None


@dataclass(frozen=True)
class Probes:
    """The probes of one process type: ``/health`` live while its beat is at most ``max_age``
    seconds old, ``/ready`` while each of ``checks`` (a name such as ``"database"``: a function
    returning a one-line problem or None) finds nothing wrong."""

    process_type: str
    max_age: float
    checks: dict[str, Callable[[], str | None]] = field(default_factory=dict)

    def health(self) -> tuple[int, dict]:
        """Return liveness as (HTTP status, JSON body): 200 ``ok``, or 503 ``stuck`` past ``max_age``."""
        age = heartbeat_age()
        alive = age <= self.max_age
        body = {
            "status": "ok" if alive else "stuck",
            "process_type": self.process_type,
            "heartbeat_age_seconds": round(age, 1),
            "max_age_seconds": self.max_age,
        }
        if not alive:
            logger.warning("%s: liveness: no heartbeat for %.0fs (limit %gs)", self.process_type, age, self.max_age)
        return (200 if alive else 503), body

    def readiness(self) -> tuple[int, dict]:
        """Return readiness as (HTTP status, JSON body): 200 ``ok`` when every check passes, else
        503 ``unavailable`` with ``checks`` naming what failed (any exception of a check counts as
        its failure, in one line)."""
        checks: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as exc:  # any failure of a backing service means "not ready"
                problem = first_line(exc)
            if problem:
                logger.warning("%s: readiness check %s failed: %s", self.process_type, name, problem)
            checks[name] = problem or "ok"
        ready = all(value == "ok" for value in checks.values())
        return (200 if ready else 503), {"status": "ok" if ready else "unavailable", "checks": checks}

    def wrap(self, app: Callable) -> Callable:
        """Return a WSGI app that answers GET and HEAD ``/health`` and ``/ready`` and passes every
        other request to ``app`` (the metrics, with their token)."""
        answers = {"/health": self.health, "/ready": self.readiness}

        def probes_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            answer = answers.get(environ.get("PATH_INFO", ""))
            if answer is None or environ.get("REQUEST_METHOD") not in {"GET", "HEAD"}:
                return app(environ, start_response)
            status, body = answer()
            payload = json.dumps(body).encode()
            reason = "OK" if status == 200 else "Service Unavailable"
            start_response(
                f"{status} {reason}",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(payload))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [] if environ["REQUEST_METHOD"] == "HEAD" else [payload]

        return probes_app
