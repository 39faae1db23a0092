"""The ``worker`` process type: django-rq's rqworker with Formation's start-up and shutdown rules.

Procfile: ``worker: exec python manage.py rqworker maintenance default`` (the periodic jobs' queue
first, so the sweep never waits behind a backlog of orders). It waits (bounded) for PostgreSQL and
Redis, then runs django-rq's command with processes.worker.Worker. SIGTERM or SIGINT: warm
shutdown, the job in progress runs to completion and commits, exit 0; a second signal: cold
shutdown, the job is left to the sweep. Its METRICS_PORT server answers ``/health`` (its loop's
heartbeat) and ``/ready`` (PostgreSQL and Redis). Documented in docs/processes.md#graceful-shutdown
and docs/processes.md#liveness.
"""

from django.conf import settings
from django.core.management.base import CommandError
from django_rq.management.commands.rqworker import Command as DjangoRQWorkerCommand

from core.liveness import Probes, database_problem, redis_problem
from core.metrics import metrics_serve
from core.preflight import ServiceUnavailable, redis_policy_problem, wait_for_services
from core.releases import release_registered
from processes.worker import liveness_max_age


class Command(DjangoRQWorkerCommand):
    help = "Run an RQ worker (SIGTERM: warm shutdown, finish the current job, exit 0; twice: cold shutdown)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.set_defaults(worker_ttl=settings.RQ_WORKER_TTL)

    def handle(self, *args, **options):
        # A signal before RQ installs its handlers (in Worker.work) ends the process with exit 0:
        # manage.py installs that rule for every process-type command.
        try:
            wait_for_services(database=True, redis=True)
        except ServiceUnavailable as exc:
            raise CommandError(f"worker: {exc}") from None
        probes = Probes(
            process_type="worker",
            max_age=liveness_max_age(worker_ttl=options["worker_ttl"]),
            checks={"database": database_problem, "redis": lambda: redis_problem() or redis_policy_problem()},
        )
        metrics_serve(process_type="worker", probes=probes)
        with release_registered(process_type="worker"):
            super().handle(*args, **options)
