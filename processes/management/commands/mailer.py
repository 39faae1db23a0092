"""The ``mailer`` process type: drain the email outbox over SMTP.

Procfile: ``mailer: exec python manage.py mailer``. It waits (bounded) for PostgreSQL, then sends due
messages in passes (mailer.engine.mailer_run), ``--interval`` seconds apart. On SIGTERM or SIGINT it
finishes and records the message being sent, leaves the rest queued and exits 0. Its METRICS_PORT
server answers ``/health`` (its loop's heartbeat) and ``/ready`` (PostgreSQL). Documented in
docs/order-flow.md#5-the-mailer, docs/processes.md#graceful-shutdown and docs/processes.md#liveness.
"""

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.liveness import Probes, database_problem
from core.metrics import metrics_serve
from core.preflight import ServiceUnavailable, wait_for_services
from core.releases import release_registered
from mailer.engine import liveness_max_age, mailer_run
from processes.commands import verbosity_log_level

logger = logging.getLogger("mailer")


class Command(BaseCommand):
    help = (
        "Send due outbox messages over SMTP until stopped (SIGTERM: finish the current message, exit 0). "
        "--verbosity: 0 logs warnings only, 1 also progress, 2 and 3 debug lines."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Make one pass over due messages, then exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds to wait between passes (default: MAILER_POLL_INTERVAL).",
        )

    def handle(self, *args, once: bool = False, interval: float | None = None, **options):
        logger.setLevel(verbosity_log_level(options["verbosity"]))
        stop = threading.Event()

        def request_stop(signum, frame):
            logger.info("mailer: %s received, finishing the current message", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            wait_for_services(database=True)
        except ServiceUnavailable as exc:
            raise CommandError(f"mailer: {exc}") from None
        interval = settings.MAILER_POLL_INTERVAL if interval is None else interval
        probes = Probes(
            process_type="mailer", max_age=liveness_max_age(interval=interval), checks={"database": database_problem}
        )
        metrics_serve(process_type="mailer", probes=probes)
        with release_registered(process_type="mailer"):
            # In this main thread: the send deadline's SIGALRM timer can interrupt any blocking step of an
            # SMTP exchange there (mailer.engine._Deadline).
            mailer_run(stop=stop, interval=interval, once=once)
