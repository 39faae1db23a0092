"""The ``mailer`` process type: drain the email outbox over SMTP.

Procfile: ``mailer: exec python manage.py mailer``. At start it waits for PostgreSQL with a
bound (core.preflight; exit 1 with one line when it stays unreachable), then runs
mailer.engine.mailer_run: each pass leases due messages one at a time and sends them
(mailer.engine.outbox_send_due; each SMTP exchange is aborted at a deadline inside its lease,
using SIGALRM in this main thread), recording a heartbeat before each message and at the start
of each pass, at most every MAILER_HEARTBEAT_SECONDS (read by ``manage.py probe mailer``), then
waits ``--interval`` seconds. A long drain therefore keeps beating, and a mailer stuck in one
message stops. A lost database connection is logged in one line and the pass retried; the
process goes on without a restart.
On SIGTERM or SIGINT it finishes the message being sent, records it as sent, leaves the rest
queued and exits 0. After kill -9, a message leased but not marked sent is due again when its
lease (MAILER_LEASE_SECONDS) expires.
With METRICS_PORT set, its metrics (send results and latency, and the outbox backlog by status
read from PostgreSQL at scrape time) are served there (core.metrics).
``--verbosity`` sets the level of the ``mailer`` loggers as django-rq's rqworker sets rq's:
0 WARNING, 1 INFO (the default), 2 or 3 DEBUG.
"""

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.metrics import metrics_serve
from core.preflight import ServiceUnavailable, wait_for_services
from mailer.engine import mailer_run
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
        metrics_serve(process_type="mailer")
        mailer_run(stop=stop, interval=settings.MAILER_POLL_INTERVAL if interval is None else interval, once=once)
