"""Send the outbox over SMTP: one message's exchange, the send loop and the mailer's heartbeat.

mailer_run is the loop of the ``mailer`` process type (processes/management/commands/mailer.py); it
drives the row state of mailer.services. Each message's SMTP exchange is cut off before its lease
ends, so no second mailer sends it meanwhile (docs/order-flow.md#the-send-deadline). Documented in
docs/order-flow.md#5-the-mailer.
"""

import contextlib
import logging
import math
import os
import signal
import smtplib
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.db import DatabaseError, close_old_connections
from django.db import connection as db_connection
from django.utils import timezone

from core import context, liveness, metrics
from core.dbclock import db_now
from core.preflight import first_line
from mailer.models import OutboxMessage
from mailer.services import (
    mailer_heartbeat_clear,
    mailer_heartbeat_record,
    outbox_message_claim,
    outbox_message_mark_sent,
    outbox_message_release,
)
from mailer.validators import validate_deliverable_address

logger = logging.getLogger(__name__)
# The mailer process's own lines (started, passes, stopped) keep the process type's name, as the
# worker's and the scheduler's do.
process_logger = logging.getLogger("mailer")

# Errors about the server or our account, not the message: never a reason to fail a message.
SERVER_OR_ACCOUNT_ERRORS = (
    smtplib.SMTPConnectError,
    smtplib.SMTPHeloError,
    smtplib.SMTPAuthenticationError,
    smtplib.SMTPNotSupportedError,
)


class SMTPDeadlineExceeded(Exception):
    """The whole SMTP exchange of one message took longer than its budget (outbox_message_send)."""


def outbox_message_send(*, message: OutboxMessage, connection) -> bool:
    """Send one leased ``message`` (see _send); every line logged meanwhile carries the ids of its
    ``log_context`` (the request, job and order that wrote it). Return True when it was sent."""
    ids = {name: value for name, value in (message.log_context or {}).items() if name in context.FIELDS}
    with context.bind(**ids):
        return _send(message=message, connection=connection)


def _send(*, message: OutboxMessage, connection) -> bool:
    """Send one leased ``message`` over the open SMTP ``connection`` and mark it sent.

    The Message-ID header is the row's fixed one. The recipient is first checked with
    mailer.validators.validate_deliverable_address (rows written before that validator existed
    may hold an address Django's SMTP backend cannot encode). Any failure is classified once
    (outbox_error_classify) and the message released in one place (outbox_message_release): a known
    error logs one line, an unknown one its stack. The exchange runs under _Deadline: past the send
    deadline the connection is dropped and the message retried (SMTPDeadlineExceeded, transient).
    Return True when the message was sent.
    """
    email = EmailMessage(
        subject=message.subject,
        body=message.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[message.to_email],
        headers={"Message-ID": message.message_id},
        connection=connection,
    )
    # The send deadline: docs/order-flow.md#the-send-deadline.
    budget = (message.lease_expires_at - db_now()).total_seconds() - 2 * settings.EMAIL_TIMEOUT
    start = time.perf_counter()
    try:
        validate_deliverable_address(message.to_email)
        with _Deadline(seconds=budget, connection=connection):
            connection.open()  # no-op when already open (Django's SMTP backend)
            email.send()
    except Exception as exc:
        if isinstance(exc, SMTPDeadlineExceeded):
            _connection_drop(connection)  # QUIT would wait on the same slow server
        reason, permanent = outbox_error_classify(exc)
        metrics.send_observe(permanent=permanent, sent=False, seconds=time.perf_counter() - start)
        outcome = outbox_message_release(message=message, error=reason, permanent=permanent)
        if permanent is None:  # unknown: keep the stack
            logger.exception("outbox %s: unexpected error while sending; %s", message.pk, outcome)
        else:
            logger.warning("outbox %s: %s", message.pk, outcome)
        connection.close()  # a fresh connection for the next message, whatever state this one is in
        return False
    metrics.send_observe(permanent=None, sent=True, seconds=time.perf_counter() - start)
    _record_sent(message=message)
    logger.info("outbox %s: sent %s to %s", message.pk, message.message_id, message.to_email)
    return True


def outbox_error_classify(exc: BaseException) -> tuple[str, bool | None]:
    """Return ``(reason, permanent)`` for an error raised while sending one message.

    ``permanent`` is True when no retry can succeed, False for a transient failure, None for an
    error of unknown kind (retried, and logged with its stack by the caller). The reply-code
    rule is RFC 5321 section 4.2.1: 5yz is a permanent negative completion, 4yz a transient one.

    - Permanent: the address is refused by validate_deliverable_address (ValidationError: the
      same encoding as Django's ``sanitize_address`` and ``punycode``, IDNA 2003); any other
      UnicodeError while encoding the message (the row's content never changes); a 5xx reply to MAIL,
      RCPT or DATA (SMTPSenderRefused, SMTPDataError); SMTPRecipientsRefused where every
      recipient got a 5xx.
    - Transient: the exchange outlasting its deadline (SMTPDeadlineExceeded); a 4xx reply;
      SMTPServerDisconnected; timeouts and connection errors (OSError);
      5xx replies that concern the server or our account rather than the message (connect
      greeting, HELO, AUTH, unsupported extension): failing every message for a bad password
      would lose mail that a fixed configuration delivers.
    """
    if isinstance(exc, SMTPDeadlineExceeded):
        return str(exc), False
    if isinstance(exc, ValidationError):
        return f"undeliverable address: {' '.join(exc.messages)}", True
    if isinstance(exc, UnicodeError):  # encoding the message failed; the same row fails the same way again
        return f"cannot be encoded: {type(exc).__name__}: {exc}", True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        details = "; ".join(f"{code} {reply.decode(errors='replace')}" for code, reply in exc.recipients.values())
        return f"recipient refused: {details}", bool(codes) and all(500 <= code < 600 for code in codes)
    if isinstance(exc, SERVER_OR_ACCOUNT_ERRORS):
        return f"SMTP server or account problem: {type(exc).__name__}: {exc}", False
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"SMTP {exc.smtp_code}: {error}", 500 <= exc.smtp_code < 600
    if isinstance(exc, smtplib.SMTPException | OSError):  # disconnects, timeouts, refused or reset connections
        return f"SMTP unavailable: {type(exc).__name__}: {exc}", False
    return f"{type(exc).__name__}: {exc}", None


class _Deadline:
    """Context manager: raise SMTPDeadlineExceeded in the block once ``seconds`` have passed.

    In the main thread (where the mailer command runs) a SIGALRM timer (signal.setitimer)
    interrupts any blocking call; in other threads a threading.Timer shuts down the socket of
    Django's SMTP ``connection`` (its ``connection.sock``), which ends a blocked read, and the
    resulting error is replaced by SMTPDeadlineExceeded; that watchdog cannot interrupt the TCP
    connect and the greeting, each still bounded by EMAIL_TIMEOUT. The timer is always disarmed on
    exit. A budget of zero or less raises at once (the lease is about to end).
    """

    def __init__(self, *, seconds: float, connection):
        self.seconds, self.connection = seconds, connection
        self.fired = False
        self.main = threading.current_thread() is threading.main_thread()

    def _error(self) -> SMTPDeadlineExceeded:
        return SMTPDeadlineExceeded(f"SMTP exchange took longer than {max(self.seconds, 0):.0f} s; retrying")

    def _alarm(self, signum, frame):
        self.fired = True
        raise self._error()

    def _watchdog(self):
        self.fired = True
        smtp = getattr(self.connection, "connection", None)
        sock = getattr(smtp, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self):
        if self.seconds <= 0:
            raise SMTPDeadlineExceeded("the lease ends in under 2 x EMAIL_TIMEOUT, too soon to send; retrying")
        if self.main:
            self.previous = signal.signal(signal.SIGALRM, self._alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        else:
            self.timer = threading.Timer(self.seconds, self._watchdog)
            self.timer.daemon = True
            self.timer.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        else:
            self.timer.cancel()
        if self.fired and exc is not None and not isinstance(exc, SMTPDeadlineExceeded):
            raise self._error() from exc
        return False


def _connection_drop(connection) -> None:
    """Close Django SMTP ``connection``'s socket without QUIT (which waits for the server's reply)."""
    smtp = getattr(connection, "connection", None)
    if smtp is not None:
        with contextlib.suppress(OSError):
            smtp.close()
    connection.connection = None


def _record_sent(*, message: OutboxMessage) -> None:
    """Mark a message the SMTP server accepted as sent, retrying while PostgreSQL is unreachable.

    Retries (0.2 s, doubling to 2 s) until one second before the lease expires: past that
    another mailer may take the row, and sending it again (same Message-ID) is the outcome.
    Raise the last DatabaseError then.
    """
    delay = 0.2
    while True:
        try:
            outbox_message_mark_sent(message=message)
            return
        except DatabaseError as exc:
            db_connection.close()  # a broken connection is not reused; the next try reconnects
            if db_now() + timedelta(seconds=delay + 1) >= message.lease_expires_at:
                logger.error(
                    "outbox %s: the SMTP server accepted %s but recording it failed (%s); after the lease it "
                    "is sent again with the same Message-ID",
                    message.pk,
                    message.message_id,
                    first_line(exc),
                )
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def outbox_send_due(
    *, stop: threading.Event | None = None, limit: int | None = None, beat: Callable[[], None] | None = None
) -> int:
    """Send due messages one at a time until none is due, ``stop`` is set or ``limit`` are sent.

    Each message is leased and recorded in short transactions of its own, and no transaction is held
    across an SMTP exchange (django-mailer's engine has the same shape).

    ``beat`` is called before each message is leased (and once when none is due): the mailer's
    liveness heartbeat, so a long drain keeps beating and a loop stuck in one message does not.
    The stop flag is checked between messages only, so a message being sent is always
    finished and recorded. Return how many messages were sent.
    """
    sent = 0
    connection = get_connection(fail_silently=False)
    try:
        while not (stop is not None and stop.is_set()) and (limit is None or sent < limit):
            if beat is not None:
                beat()
            message = outbox_message_claim()
            if message is None:
                break
            if not outbox_message_send(message=message, connection=connection):
                break  # the server is failing: wait for the next pass instead of spinning
            sent += 1
    finally:
        connection.close()
    return sent


class _Heartbeat:
    """The liveness beat of this mailer process, recorded at most every MAILER_HEARTBEAT_SECONDS.

    Called by the sending loop itself before each message, never from a thread of its own: the
    beat stops when the loop is stuck and goes on while it makes progress.
    """

    def __init__(self):
        self.hostname, self.pid, self.started_at = socket.gethostname(), os.getpid(), timezone.now()
        self.last = -math.inf

    def __call__(self) -> None:
        # This process's own beat first, whatever the database says (core.liveness).
        liveness.beat()
        if time.monotonic() - self.last >= settings.MAILER_HEARTBEAT_SECONDS:
            mailer_heartbeat_record(hostname=self.hostname, pid=self.pid, started_at=self.started_at)
            self.last = time.monotonic()

    def clear(self) -> None:
        try:
            mailer_heartbeat_clear(hostname=self.hostname, pid=self.pid)
        except DatabaseError as exc:
            # The row ages out by itself: the probe only counts recent beats.
            process_logger.info("mailer: heartbeat not cleared (%s)", first_line(exc))


def liveness_max_age(*, interval: float) -> float:
    """Return how many seconds a live mailer's loop may go without a beat (core.liveness), for one
    whose passes are ``interval`` seconds apart: it beats at each pass and before each message, and
    one message's exchange and recording end within its lease (docs/order-flow.md#the-send-deadline),
    so MAILER_LEASE_SECONDS + ``interval`` + MAILER_HEARTBEAT_SECONDS (66 s with the defaults):
    only a stuck mailer gets that old, however long its backlog or the database's outage."""
    return settings.MAILER_LEASE_SECONDS + interval + settings.MAILER_HEARTBEAT_SECONDS


class _Outage:
    """The log lines of one PostgreSQL outage as the mailer's loop sees it: one warning when a pass
    first fails (a refused connect, or a silent connection ended by the keepalives of
    DATABASE_SILENCE_TIMEOUT), a reminder at most every REMINDER seconds while it lasts, and one
    line when a pass succeeds again; the passes in between retry without a line each."""

    REMINDER = 60.0  # seconds between two "still unavailable" lines of one outage

    def __init__(self):
        self.since: float | None = None
        self.failures = 0
        self.last_line = -math.inf

    def failed(self, exc: DatabaseError) -> None:
        """Count a pass that failed with ``exc``; log it if it starts the outage or a reminder is due."""
        now = time.monotonic()
        self.failures += 1
        if self.since is None:
            self.since = now
            process_logger.warning("mailer: database unavailable (%s); reconnecting each pass", first_line(exc))
        elif now - self.last_line < self.REMINDER:
            return
        else:
            process_logger.warning(
                "mailer: database still unavailable after %.0f s (%s); reconnecting each pass",
                now - self.since,
                first_line(exc),
            )
        self.last_line = now

    def ended(self) -> None:
        """A pass succeeded: say so once if an outage was under way."""
        if self.since is not None:
            process_logger.info(
                "mailer: database reachable again after %.1f s (%d failed pass(es))",
                time.monotonic() - self.since,
                self.failures,
            )
        self.since, self.failures, self.last_line = None, 0, -math.inf


def mailer_run(*, stop: threading.Event, interval: float, once: bool = False) -> None:
    """Drain the outbox in passes until ``stop`` is set (after one pass with ``once``).

    Each pass sends due messages (outbox_send_due) with this process's heartbeat (hostname and
    pid, at most every settings.MAILER_HEARTBEAT_SECONDS), then waits ``interval`` seconds or
    until ``stop`` is set. A DatabaseError closes the connection and is retried at the next pass,
    with one line when the outage starts, a reminder a minute, one line when it ends (_Outage); any
    other error is logged with its stack and retried at the next pass; neither is raised. On return
    the heartbeat is removed (the probe then sees no live mailer here) and the database connection
    closed.
    """
    beat = _Heartbeat()
    outage = _Outage()
    process_logger.info("mailer: started, polling every %gs", interval)
    while not stop.is_set():
        liveness.beat()
        close_old_connections()
        sent = 0
        try:
            sent = outbox_send_due(stop=stop, beat=beat)
            outage.ended()
        except DatabaseError as exc:
            db_connection.close()  # a connection that failed (silent, reset) is never reused
            outage.failed(exc)
        except Exception:
            process_logger.exception("mailer: pass failed")  # unknown: keep the stack, retry next pass
        if sent:
            process_logger.info("mailer: sent %d message(s)", sent)
        if once:
            break
        stop.wait(interval)
    beat.clear()
    close_old_connections()
    process_logger.info("mailer: stopped")
