"""The ``mailer`` process type: drain the email outbox over SMTP.

Procfile: ``mailer: exec python manage.py mailer``. Each pass leases due messages one at a
time and sends them (mailer.services.outbox_send_due), then waits ``--interval`` seconds.
On SIGTERM or SIGINT it finishes the message being sent, records it as sent, leaves the rest
queued and exits 0. After kill -9, a message leased but not marked sent is due again when its
lease (MAILER_LEASE_SECONDS) expires.
"""

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from mailer.services import outbox_send_due

logger = logging.getLogger("mailer")


class Command(BaseCommand):
    help = (
        "Send due messages from the email outbox over SMTP until stopped (SIGTERM: finish the current message, exit 0)."
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
        interval = settings.MAILER_POLL_INTERVAL if interval is None else interval
        stop = threading.Event()

        def request_stop(signum, frame):
            logger.info("mailer: %s received, finishing the current message", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        logger.info("mailer: started, polling every %gs", interval)
        while not stop.is_set():
            close_old_connections()
            try:
                sent = outbox_send_due(stop=stop)
            except Exception:
                # Database unreachable or the like: log with the stack, retry next pass.
                logger.exception("mailer: pass failed")
                sent = 0
            if sent:
                logger.info("mailer: sent %d message(s)", sent)
            if once:
                break
            stop.wait(interval)
        close_old_connections()
        logger.info("mailer: stopped")
