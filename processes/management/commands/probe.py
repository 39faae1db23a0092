"""Whether a process type lives, from its trace in the backing services: for people, scripts and
compose's web healthcheck.

    python manage.py probe web|worker|scheduler|mailer [--any-host] [--max-age SECONDS]

Exit 0 when a live process of that type runs on this host (on any host with ``--any-host``), else 1;
one line either way. Live means the heartbeat the process writes from its own loop is recent (web:
``/health`` answers). It asks Redis or PostgreSQL, so it fails while they are away: orchestrators
probe each process's own ``/health`` instead (core.liveness). Documented in docs/processes.md#liveness.
"""

import socket
import urllib.request

import django_rq
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from redis.exceptions import RedisError
from rq import Worker
from rq_scheduler import Scheduler

from core.preflight import first_line
from core.queues import DEFAULT_QUEUE
from mailer.selectors import mailer_alive


class Command(BaseCommand):
    help = "Exit 0 if a live process of the given type runs on this host, else 1 (one line either way)."

    def add_arguments(self, parser):
        parser.add_argument("type", choices=["web", "worker", "scheduler", "mailer"])
        parser.add_argument("--any-host", action="store_true", help="Count processes of every host.")
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="Mailer heartbeat age limit, seconds (default: MAILER_LEASE_SECONDS + MAILER_HEARTBEAT_SECONDS).",
        )

    def handle(self, *args, type: str, any_host: bool, max_age: float | None, **options):
        if max_age is None:
            # A working mailer beats before each message, and one message's exchange and recording end
            # within its lease (docs/order-flow.md#the-send-deadline): only a stuck one gets this old.
            max_age = settings.MAILER_LEASE_SECONDS + settings.MAILER_HEARTBEAT_SECONDS
        hostname = socket.gethostname()
        where = "any host" if any_host else f"host {hostname}"
        count = getattr(self, f"_{type}")(hostname=None if any_host else hostname, max_age=max_age)
        if not count:
            raise CommandError(f"{type}: no live process on {where}")
        self.stdout.write(f"{type}: {count} live on {where}")

    def _web(self, *, hostname, max_age) -> int:
        """Return 1 when web's ``/health`` on this host answers 200 within 2 s (it touches no backing
        service); raise CommandError when it does not answer."""
        # PORT as the settings validated it (settings.WEB_SERVER): a bad value fails with one line.
        url = f"http://127.0.0.1:{settings.WEB_SERVER['port']}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status == 200)
        except OSError as exc:
            raise CommandError(f"web: {url} did not answer: {exc}") from None

    def _redis(self):
        return django_rq.get_connection(DEFAULT_QUEUE)

    def _worker(self, *, hostname, max_age) -> int:
        """Return how many RQ workers of ``hostname`` (None: any) are registered in Redis.

        An idle worker's key expires RQ_WORKER_TTL + 60 s after its last heartbeat (rq's Worker.heartbeat);
        after Redis lost its data the worker registers again on its next heartbeat (processes.worker).
        Raise CommandError when Redis is unreachable.
        """
        try:
            workers = Worker.all(connection=self._redis())
        except RedisError as exc:
            raise CommandError(f"worker: Redis unreachable: {exc}") from None
        return sum(1 for worker in workers if hostname is None or worker.hostname == hostname)

    def _scheduler(self, *, hostname, max_age) -> int:
        """Return how many rq-scheduler instances of ``hostname`` (None: any) are registered in Redis
        and not dead; an instance's key expires ``--interval`` + 10 s after its last tick, and is
        written again on the next tick after Redis lost its data (processes.scheduler). Raise
        CommandError when Redis is unreachable."""
        pattern = f"{Scheduler.redis_scheduler_namespace_prefix}{hostname or ''}*"
        try:
            keys = list(self._redis().scan_iter(match=pattern))
            return sum(1 for key in keys if not self._redis().hexists(key, "death"))
        except RedisError as exc:
            raise CommandError(f"scheduler: Redis unreachable: {exc}") from None

    def _mailer(self, *, hostname, max_age) -> int:
        """Return how many mailers of ``hostname`` (None: any) recorded a heartbeat within ``max_age``
        seconds; raise CommandError when the database is unreachable."""
        try:
            return mailer_alive(hostname=hostname, max_age=max_age)
        except DatabaseError as exc:
            raise CommandError(f"mailer: database unreachable: {first_line(exc)}") from None
