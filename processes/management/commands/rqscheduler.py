"""The ``scheduler`` process type: rq-scheduler, with Formation's periodic jobs.

Procfile: ``scheduler: exec python manage.py rqscheduler --interval 1``. It waits (bounded) for
Redis, registers settings.PERIODIC_JOBS under fixed ids and runs rq-scheduler
(processes.scheduler.scheduler_run); several copies may run, each tick taking rq-scheduler's Redis
lock. On SIGTERM or SIGINT it releases the lock and exits 0. Its METRICS_PORT server answers
``/health`` (its loop's heartbeat) and ``/ready`` (Redis). Documented in
docs/processes.md#crash-recovery, docs/processes.md#liveness and docs/order-flow.md#the-sweep.
"""

import logging

from django.core.management.base import CommandError
from django_rq.management.commands.rqscheduler import Command as DjangoRQSchedulerCommand

from core.liveness import Probes, redis_problem
from core.metrics import metrics_serve
from core.preflight import ServiceUnavailable, redis_policy_problem, wait_for_services
from core.releases import release_registered
from processes.commands import verbosity_log_level
from processes.scheduler import liveness_max_age, scheduler_run


class Command(DjangoRQSchedulerCommand):
    help = "Run rq-scheduler with the periodic jobs registered under fixed ids (SIGTERM: release the lock, exit 0)."

    def handle(self, *args, **options):
        # Until rq-scheduler installs its handlers (processes.scheduler.Scheduler, in run()), a
        # SIGTERM or SIGINT ends the process with exit 0 (manage.py's rule for process types); no
        # lock is held yet. After a run ended on a Redis error those handlers stay installed.
        # rq-scheduler's own handler would print every line twice beside Django's LOGGING.
        logging.getLogger("rq_scheduler").setLevel(verbosity_log_level(options["verbosity"]))
        try:
            wait_for_services(redis=True)
        except ServiceUnavailable as exc:
            raise CommandError(f"scheduler: Redis {exc}") from None
        probes = Probes(
            process_type="scheduler",
            max_age=liveness_max_age(interval=options["interval"]),
            checks={"redis": lambda: redis_problem() or redis_policy_problem()},
        )
        metrics_serve(process_type="scheduler", probes=probes)
        with release_registered(process_type="scheduler"):
            scheduler_run(queue=options["queue"], interval=options["interval"])
