"""Which release each live process runs: a Redis key per process, kept fresh by a thread of its own.

The post-deploy step reads them (processes.stages.other_releases) to tell whether a process of
another release still runs; a process that holds no database session at that moment (an idle web
worker) is seen here all the same. Documented in docs/releases.md#which-release-runs.
"""

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator

import redis
from django.conf import settings

from core.preflight import first_line
from core.queues import DEFAULT_QUEUE

logger = logging.getLogger(__name__)

KEY_PREFIX = "formation:process:"
# Seconds: a key outlives its process by at most TTL_SECONDS (kill -9); it is written again every
# REFRESH_SECONDS, so one lost write (Redis restarting, or emptied) never lets it lapse.
TTL_SECONDS = 60
REFRESH_SECONDS = 15


class ReleaseRegistration:
    """Keep ``formation:process:<host>:<pid>`` = ``{"type", "release", "host", "pid"}`` in Redis while
    the process lives (``start``), and delete it when it stops cleanly (``stop``).

    Its Redis client is its own, never shared with the process's other work: a process that forks
    (RQ's work horses) could otherwise fork while this thread holds that client's pool lock.
    Redis errors are logged once per outage and retried at the next refresh; they never stop the process.
    """

    def __init__(self, *, process_type: str, release: str, interval: float = REFRESH_SECONDS, ttl: int = TTL_SECONDS):
        self.key = f"{KEY_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.value = json.dumps(
            {"type": process_type, "release": release, "host": socket.gethostname(), "pid": os.getpid()}
        )
        self.interval = interval
        self.ttl = ttl
        url = settings.RQ_QUEUES[DEFAULT_QUEUE]["URL"]
        self.client = redis.Redis.from_url(
            url, socket_timeout=settings.REDIS_CONNECT_TIMEOUT, **settings.REDIS_SOCKET_OPTIONS
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="release-registration", daemon=True)

    def start(self) -> "ReleaseRegistration":
        """Write the key now and every ``interval`` seconds from a daemon thread; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing and delete the key (best effort: Redis may be gone; the key then expires)."""
        self._stop.set()
        # A write under way would bring the key back after the delete: let the thread end first.
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * settings.REDIS_CONNECT_TIMEOUT + 1)
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self.key)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.client.set(self.key, self.value, ex=self.ttl)
                if failing:
                    logger.info("release registration: written again in Redis")
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    logger.warning("release registration: Redis did not answer (%s); retrying", first_line(exc))
                failing = True
            self._stop.wait(self.interval)


def release_register(*, process_type: str) -> ReleaseRegistration:
    """Register this process as ``process_type`` of settings.RELEASE until ``stop()`` or its exit;
    return the registration.

    The key is deleted by ``stop()`` or at a clean exit (atexit); a process ended otherwise leaves
    it to expire.
    """
    registration = ReleaseRegistration(process_type=process_type, release=settings.RELEASE).start()
    atexit.register(registration.stop)
    return registration


@contextlib.contextmanager
def release_registered(*, process_type: str) -> Iterator[ReleaseRegistration]:
    """Keep this process registered as ``process_type`` while inside (release_register), no longer:
    a process type's command run in a process that outlives it (``call_command``) leaves no key."""
    registration = release_register(process_type=process_type)
    try:
        yield registration
    finally:
        registration.stop()


def registered_processes(client: redis.Redis) -> list[dict]:
    """Return every registration in Redis (``client``): dicts with ``type``, ``release``, ``host``, ``pid``.

    Raise redis.RedisError when Redis cannot be asked.
    """
    found = []
    for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=500):
        raw = client.get(key)
        if raw is None:  # expired between the scan and the read
            continue
        try:
            found.append(json.loads(raw))
        except ValueError:
            continue
    return found
