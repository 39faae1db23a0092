"""The ``scheduler`` process type: rq-scheduler, with Formation's periodic jobs registered first.

Procfile: ``scheduler: exec python manage.py rqscheduler --interval 5``. This command
overrides django-rq's ``rqscheduler`` (orders comes before django_rq in INSTALLED_APPS): it
registers settings.PERIODIC_JOBS under fixed ids, then runs django-rq's command unchanged.
Several copies may run: each pass takes rq-scheduler's Redis lock (``rq:scheduler_lock``,
expiring after interval + 10 s) so a due job is moved to its queue once. On SIGTERM or
SIGINT rq-scheduler releases the lock and exits.
"""

import logging
import signal

import django_rq
from django.core.management.base import CommandError
from django_rq.management.commands.rqscheduler import Command as DjangoRQSchedulerCommand
from redis.exceptions import RedisError

from orders.scheduling import periodic_jobs_register

logger = logging.getLogger("scheduler")


def _exit_before_start(signum, frame):
    logger.info("scheduler: %s received before start, exiting", signal.Signals(signum).name)
    raise SystemExit(0)


class Command(DjangoRQSchedulerCommand):
    help = "Register the periodic jobs under fixed ids, then run rq-scheduler (django-rq's rqscheduler)."

    def handle(self, *args, **options):
        # Until rq-scheduler installs its own handlers, a SIGTERM or SIGINT ends the process the
        # way those handlers do (SystemExit, exit 0); no lock is held yet, so nothing to release.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _exit_before_start)
        try:
            scheduler = django_rq.get_scheduler(name=options["queue"], interval=options["interval"])
            ids = periodic_jobs_register(scheduler=scheduler)
        except RedisError as exc:
            raise CommandError(f"Redis unreachable at REDIS_URL: {exc}") from None
        logger.info("scheduler: periodic jobs registered: %s", ", ".join(ids))
        super().handle(*args, **options)
