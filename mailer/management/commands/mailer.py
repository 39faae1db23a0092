"""The ``mailer`` process type: drain the email outbox over SMTP.

Procfile: ``mailer: exec python manage.py mailer``. At start it waits for PostgreSQL with a
bound (project.preflight; exit 1 with one line when it stays unreachable). Each pass leases
due messages one at a time and sends them (mailer.services.outbox_send_due; each SMTP exchange
is aborted at a deadline inside its lease, using SIGALRM in this main thread), recording a
heartbeat before each message and at the start of each pass, at most every
MAILER_HEARTBEAT_SECONDS (read by ``manage.py probe mailer``), then waits ``--interval``
seconds. A long drain therefore keeps beating, and a mailer stuck in one message stops. A lost
database connection is logged in one line and the pass retried; the process goes on without a
restart.
On SIGTERM or SIGINT it finishes the message being sent, records it as sent, leaves the rest
queued and exits 0. After kill -9, a message leased but not marked sent is due again when its
lease (MAILER_LEASE_SECONDS) expires.
"""

import logging
import math
import os
import signal
import socket
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from mailer.services import mailer_heartbeat, mailer_heartbeat_clear, outbox_send_due
from project.preflight import ServiceUnavailable, first_line, wait_for_services

logger = logging.getLogger("mailer")


class Command(BaseCommand):
    help = "Send due outbox messages over SMTP until stopped (SIGTERM: finish the current message, exit 0)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Make one pass over due messages, then exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds to wait between passes (default: MAILER_POLL_INTERVAL).",
        )

    def handle(self, *args, once: bool = False, interval: float | None = None, **options):
        interval = settings.MAILER_POLL_INTERVAL if interval is None else interval
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
        hostname, pid, started_at = socket.gethostname(), os.getpid(), timezone.now()
        last_beat = -math.inf

        def beat() -> None:
            # Called by the sending loop itself before each message, never from a thread of its
            # own: the beat stops when the loop is stuck and goes on while it makes progress.
            nonlocal last_beat
            if time.monotonic() - last_beat >= settings.MAILER_HEARTBEAT_SECONDS:
                mailer_heartbeat(hostname=hostname, pid=pid, started_at=started_at)
                last_beat = time.monotonic()

        logger.info("mailer: started, polling every %gs", interval)
        while not stop.is_set():
            close_old_connections()
            sent = 0
            try:
                sent = outbox_send_due(stop=stop, beat=beat)
            except DatabaseError as exc:
                logger.warning("mailer: database unavailable (%s); retrying", first_line(exc))
            except Exception:
                logger.exception("mailer: pass failed")  # unknown: keep the stack, retry next pass
            if sent:
                logger.info("mailer: sent %d message(s)", sent)
            if once:
                break
            stop.wait(interval)
        try:
            mailer_heartbeat_clear(hostname=hostname, pid=pid)
        except DatabaseError as exc:
            # The row ages out by itself: the probe only counts recent beats.
            logger.info("mailer: heartbeat not cleared (%s)", first_line(exc))
        close_old_connections()
        logger.info("mailer: stopped")
