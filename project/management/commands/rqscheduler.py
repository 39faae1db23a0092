"""The ``scheduler`` process type: rq-scheduler, with Formation's periodic jobs.

Procfile: ``scheduler: exec python manage.py rqscheduler --interval 5``. Overrides django-rq's
command of the same name (``project`` comes before ``django_rq`` in INSTALLED_APPS): it waits
for Redis with a bound (project.preflight), registers settings.PERIODIC_JOBS under fixed ids,
then runs rq-scheduler. Several copies may run: each tick takes rq-scheduler's Redis lock
(``rq:scheduler_lock``, expiring ``interval + 10`` seconds after it was taken), so a due job is
moved to its queue once; a copy killed while holding the lock delays the others by at most
that TTL. On SIGTERM or SIGINT rq-scheduler releases the lock and the process exits 0. If
Redis goes away, the process says so in one line and reconnects with a backoff (up to 30 s).
"""

import logging
import os
import socket
import time

import django_rq
from django.core.management.base import CommandError
from django_rq.management.commands.rqscheduler import Command as DjangoRQSchedulerCommand
from redis.exceptions import RedisError

from project.preflight import ServiceUnavailable, wait_for_services
from project.scheduler import periodic_jobs_register

logger = logging.getLogger("scheduler")
MAX_RECONNECT_WAIT = 30.0


class Command(DjangoRQSchedulerCommand):
    help = "Run rq-scheduler with the periodic jobs registered under fixed ids (SIGTERM: release the lock, exit 0)."

    def handle(self, *args, **options):
        # Until rq-scheduler installs its handlers (project.scheduler.Scheduler, in run()), a
        # SIGTERM or SIGINT ends the process with exit 0 (manage.py's rule for process types); no
        # lock is held yet. After a run ended on a Redis error those handlers stay installed.
        # rq-scheduler's own handler would print every line twice beside Django's LOGGING.
        verbosity = options["verbosity"]
        logging.getLogger("rq_scheduler").setLevel(
            "DEBUG" if verbosity >= 2 else "WARNING" if verbosity == 0 else "INFO"
        )
        try:
            wait_for_services(redis=True)
        except ServiceUnavailable as exc:
            raise CommandError(f"scheduler: Redis {exc}") from None
        wait = 1.0
        run = 0
        scheduler = None
        while True:
            run += 1
            try:
                scheduler = django_rq.get_scheduler(name=options["queue"], interval=options["interval"])
                # A name per host, process and run: the liveness probe finds it by host, and a
                # run after a Redis outage never collides with the key of the previous one.
                scheduler.name = f"{socket.gethostname()}.{os.getpid()}.{run}"
                ids = periodic_jobs_register(scheduler=scheduler)
                logger.info("scheduler: periodic jobs registered: %s", ", ".join(ids))
                wait = 1.0
                scheduler.run()
                return
            except RedisError as exc:
                if getattr(scheduler, "stopping", False):
                    # Asked to stop: rq-scheduler's clean-up could not reach Redis; the lock expires.
                    logger.info("scheduler: stopped (Redis unreachable during clean-up)")
                    return
                logger.error("scheduler: Redis unavailable (%s); reconnecting in %gs", exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, MAX_RECONNECT_WAIT)
