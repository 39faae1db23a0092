"""Outbox operations: write a message, lease due ones, send over SMTP, release expired leases.

Several mailers share one outbox: a claim is ``SELECT … FOR UPDATE SKIP LOCKED`` that sets a
lease in its own short transaction (django-mailer's engine shares a queue the same way), so
two mailers never take the same row; marking sent is conditional on still holding the lease.
"""

import logging
import smtplib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.db import DatabaseError, transaction
from django.db import connection as db_connection
from django.db.models import Q
from django.utils import timezone

from mailer.models import MailerHeartbeat, OutboxMessage, OutboxStatus
from mailer.validators import validate_deliverable_address
from project.preflight import first_line

logger = logging.getLogger(__name__)

# Errors about the server or our account, not the message: never a reason to fail a message.
SERVER_OR_ACCOUNT_ERRORS = (
    smtplib.SMTPConnectError,
    smtplib.SMTPHeloError,
    smtplib.SMTPAuthenticationError,
    smtplib.SMTPNotSupportedError,
)

# Seconds before the n-th retry: 2, 4, 8, … capped at 5 minutes.
BACKOFF_CAP_SECONDS = 300


def outbox_message_create(*, key: str, to: str, subject: str, body: str) -> OutboxMessage:
    """Add a message to the outbox, once per ``key``; return the row (the existing one on a repeat).

    Call inside the transaction that makes the business change, so both commit or neither does.
    """
    message, _ = OutboxMessage.objects.get_or_create(
        key=key, defaults={"to_email": to, "subject": subject, "body": body}
    )
    return message


def outbox_claim(*, lease_seconds: int | None = None) -> OutboxMessage | None:
    """Lease the oldest due message for ``lease_seconds`` (default settings.MAILER_LEASE_SECONDS).

    Due means pending with ``due_at`` passed, or sending with an expired lease (its mailer
    died). Rows locked by another mailer are skipped, never waited for. Return the leased row,
    or None when nothing is due.
    """
    lease_seconds = settings.MAILER_LEASE_SECONDS if lease_seconds is None else lease_seconds
    now = timezone.now()
    with transaction.atomic():
        message = (
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(
                Q(status=OutboxStatus.PENDING, due_at__lte=now)
                | Q(status=OutboxStatus.SENDING, lease_expires_at__lt=now)
            )
            .order_by("due_at", "id")
            .first()
        )
        if message is None:
            return None
        message.status = OutboxStatus.SENDING
        message.lease_token = uuid.uuid4()
        message.lease_expires_at = now + timedelta(seconds=lease_seconds)
        message.attempts += 1
        message.save(update_fields=["status", "lease_token", "lease_expires_at", "attempts"])
    return message


def outbox_mark_sent(*, message: OutboxMessage) -> bool:
    """Record a leased ``message`` as sent; return False when its lease was lost meanwhile."""
    updated = OutboxMessage.objects.filter(
        pk=message.pk, status=OutboxStatus.SENDING, lease_token=message.lease_token
    ).update(status=OutboxStatus.SENT, sent_at=timezone.now(), lease_token=None, lease_expires_at=None, last_error="")
    if not updated:
        logger.warning("outbox %s: sent, but its lease had passed to another mailer", message.pk)
    return bool(updated)


def outbox_release(*, message: OutboxMessage, error: str, permanent: bool = False) -> None:
    """Give a leased ``message`` back after a failed attempt: due again after a backoff, or failed.

    It fails for good when ``permanent`` or after settings.MAILER_MAX_ATTEMPTS attempts.
    """
    final = permanent or message.attempts >= settings.MAILER_MAX_ATTEMPTS
    delay = min(2**message.attempts, BACKOFF_CAP_SECONDS)
    OutboxMessage.objects.filter(pk=message.pk, lease_token=message.lease_token).update(
        status=OutboxStatus.FAILED if final else OutboxStatus.PENDING,
        due_at=timezone.now() + timedelta(seconds=delay),
        lease_token=None,
        lease_expires_at=None,
        last_error=error[:2000],
    )


def email_send(*, message: OutboxMessage, connection) -> bool:
    """Send one leased ``message`` over the open SMTP ``connection`` and mark it sent.

    The Message-ID header is the row's fixed one. The recipient is first checked with
    mailer.validators.validate_deliverable_address (rows written before that validator existed
    may hold an address Django's SMTP backend cannot encode). Any failure is classified once
    (email_error_classify) and the message released in one place: a permanent failure fails it
    at once with the reason, anything else makes it due again after a backoff. Return True
    when the message was sent.
    """
    email = EmailMessage(
        subject=message.subject,
        body=message.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[message.to_email],
        headers={"Message-ID": message.message_id},
        connection=connection,
    )
    try:
        validate_deliverable_address(message.to_email)
        connection.open()  # no-op when already open (Django's SMTP backend)
        email.send()
    except Exception as exc:
        reason, permanent = email_error_classify(exc)
        if permanent is None:  # unknown: keep the stack, retry like a transient error
            logger.exception("outbox %s: unexpected error while sending, will retry", message.pk)
        elif permanent:
            logger.warning("outbox %s: failed for good: %s", message.pk, reason)
        else:
            logger.warning("outbox %s: will retry: %s", message.pk, reason)
        outbox_release(message=message, error=reason, permanent=bool(permanent))
        connection.close()  # a fresh connection for the next message, whatever state this one is in
        return False
    _record_sent(message=message)
    logger.info("outbox %s: sent %s to %s", message.pk, message.message_id, message.to_email)
    return True


def email_error_classify(exc: BaseException) -> tuple[str, bool | None]:
    """Return ``(reason, permanent)`` for an error raised while sending one message.

    ``permanent`` is True when no retry can succeed, False for a transient failure, None for an
    error of unknown kind (retried, and logged with its stack by the caller). The reply-code
    rule is RFC 5321 section 4.2.1: 5yz is a permanent negative completion, 4yz a transient one.

    - Permanent: the address is refused by validate_deliverable_address (ValidationError: the
      same encoding as Django's ``sanitize_address`` and ``punycode``, IDNA 2003); any other
      UnicodeError while encoding the message (the row's content never changes); a 5xx reply to MAIL,
      RCPT or DATA (SMTPSenderRefused, SMTPDataError); SMTPRecipientsRefused where every
      recipient got a 5xx.
    - Transient: a 4xx reply; SMTPServerDisconnected; timeouts and connection errors (OSError);
      5xx replies that concern the server or our account rather than the message (connect
      greeting, HELO, AUTH, unsupported extension): failing every message for a bad password
      would lose mail that a fixed configuration delivers.
    """
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


def _record_sent(*, message: OutboxMessage) -> None:
    """Mark a message the SMTP server accepted as sent, retrying while PostgreSQL is unreachable.

    Retries (0.2 s, doubling to 2 s) until one second before the lease expires: past that
    another mailer may take the row, and sending it again (same Message-ID) is the outcome.
    Raise the last DatabaseError then.
    """
    delay = 0.2
    while True:
        try:
            outbox_mark_sent(message=message)
            return
        except DatabaseError as exc:
            db_connection.close()  # a broken connection is not reused; the next try reconnects
            if timezone.now() + timedelta(seconds=delay + 1) >= message.lease_expires_at:
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
            message = outbox_claim()
            if message is None:
                break
            if not email_send(message=message, connection=connection):
                break  # the server is failing: wait for the next pass instead of spinning
            sent += 1
    finally:
        connection.close()
    return sent


def outbox_release_expired_leases() -> int:
    """Make messages whose lease expired unsent due again now; return how many."""
    now = timezone.now()
    return OutboxMessage.objects.filter(status=OutboxStatus.SENDING, lease_expires_at__lt=now).update(
        status=OutboxStatus.PENDING, lease_token=None, lease_expires_at=None, due_at=now
    )


def mailer_heartbeat(*, hostname: str, pid: int, started_at) -> None:
    """Record that the mailer ``hostname:pid`` is alive now (one upsert)."""
    MailerHeartbeat.objects.update_or_create(
        name=f"{hostname}:{pid}",
        defaults={"hostname": hostname, "pid": pid, "started_at": started_at, "beat_at": timezone.now()},
    )


def mailer_heartbeat_clear(*, hostname: str, pid: int) -> None:
    """Remove the heartbeat of a mailer that stops gracefully."""
    MailerHeartbeat.objects.filter(name=f"{hostname}:{pid}").delete()


def mailer_alive(*, hostname: str | None, max_age: float) -> int:
    """Return how many mailers on ``hostname`` (None: any host) beat within the last ``max_age`` seconds."""
    beats = MailerHeartbeat.objects.filter(beat_at__gte=timezone.now() - timedelta(seconds=max_age))
    return (beats if hostname is None else beats.filter(hostname=hostname)).count()
