"""Outbox row state: write a message, lease due ones, record or release an attempt, release expired leases.

Several mailers share one outbox: a lease is taken with ``SELECT … FOR UPDATE SKIP LOCKED`` in a
short transaction of its own, so two mailers never take the same row. Nothing here talks SMTP:
mailer.engine sends the leased rows and records each outcome here; outbox_message_release applies
the retry policy. Documented in docs/order-flow.md#5-the-mailer.
"""

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet

from core import context
from core.dbclock import db_now
from mailer.models import MailerHeartbeat, OutboxMessage, OutboxStatus

logger = logging.getLogger(__name__)

# Seconds before the n-th retry: 2, 4, 8, … capped at 5 minutes.
BACKOFF_CAP_SECONDS = 300

# Start of the last_error of a message the mailer gave up on, for people; code reads the
# ``gave_up`` field (mailer.selectors.outbox_message_gave_up).
GAVE_UP_PREFIX = "gave up: "
LEASE_EXPIRED = "the lease expired before the send was recorded (the mailer stopped or was killed mid-send)"


def _unsettled_attempt(*, message: OutboxMessage, detail: str) -> bool:
    """Count one more attempt of ``message`` with no known outcome; return True when it is final.

    Sets ``unsettled_attempts``, ``gave_up`` and ``last_error`` on the instance (the caller saves):
    final once settings.MAILER_MAX_ATTEMPTS such attempts came in a row.
    """
    message.unsettled_attempts += 1
    message.gave_up = message.unsettled_attempts >= settings.MAILER_MAX_ATTEMPTS
    message.last_error = (
        f"{GAVE_UP_PREFIX}{message.unsettled_attempts} attempts in a row ended with no outcome; the last: {detail}"
        if message.gave_up
        else detail
    )
    return message.gave_up


def outbox_message_create(*, key: str, to: str, subject: str, body: str) -> OutboxMessage:
    """Add a message to the outbox, once per ``key``; return the row (the existing one on a repeat).

    Call inside the transaction that makes the business change, so both commit or neither does.
    The log context now (core.context: the request, job and order ids) is kept with the row;
    the mailer logs the message's sending under it.
    """
    message, _ = OutboxMessage.objects.get_or_create(
        key=key,
        defaults={"to_email": to, "subject": subject, "body": body, "log_context": context.current() or None},
    )
    return message


def outbox_message_retry(*, message_id: int) -> bool:
    """Put the failed outbox message ``message_id`` back in the queue, due now; return whether it was.

    The staff's "retry email". The mailer's counters start again as for a new message:
    ``attempts`` (the backoff: 2 s, 4 s, …), ``unsettled_attempts`` and ``gave_up``, and the give-up
    time (settings.MAILER_GIVE_UP_AFTER) counts from now (``requeued_at``). ``last_error`` stays
    until the next attempt's outcome replaces it. The same Message-ID is kept: it is the same
    message. A message that is not failed (pending, being sent, sent) is left alone: False, so a
    second click, or a retry of a message another mailer is sending, changes nothing.
    Raise OutboxMessage.DoesNotExist for an unknown id.
    """
    with transaction.atomic():
        message = OutboxMessage.objects.select_for_update().get(pk=message_id)
        if message.status != OutboxStatus.FAILED:
            return False
        now = db_now()
        message.status = OutboxStatus.PENDING
        message.due_at = message.requeued_at = now
        message.attempts = message.unsettled_attempts = 0
        message.gave_up = False
        message.save(update_fields=["status", "due_at", "requeued_at", "attempts", "unsettled_attempts", "gave_up"])
    logger.info("outbox %s: retried by staff, due now", message_id)
    return True


def outbox_message_claim(*, lease_seconds: int | None = None) -> OutboxMessage | None:
    """Lease the oldest due message for ``lease_seconds`` (default settings.MAILER_LEASE_SECONDS).

    Due means pending with ``due_at`` passed, or sending with an expired lease (its mailer
    died). Rows locked by another mailer are skipped, never waited for, and each lease is its own
    short transaction, so several mailers share the queue (as django-mailer's engine does). A row taken over from
    an expired lease counts one more attempt with no outcome; after settings.MAILER_MAX_ATTEMPTS
    in a row it is failed here with the reason instead of leased (a message that kills its
    mailers is not retried forever), and the next due row is looked at. Return the leased row,
    or None when nothing is due.
    """
    lease_seconds = settings.MAILER_LEASE_SECONDS if lease_seconds is None else lease_seconds
    while True:
        message, leased = _claim_one(lease_seconds=lease_seconds)
        if message is None or leased:
            return message
        logger.warning("outbox %s: failed for good: %s", message.pk, message.last_error)


def claim_expired_lease_query(now: datetime) -> QuerySet[OutboxMessage]:
    """Return the claim's query for messages whose lease expired before ``now`` (aware datetime).

    Longest expired first; locks with SKIP LOCKED; walks the partial index outbox_sending_lease in
    its order. Raises nothing itself.
    """
    return (
        OutboxMessage.objects.select_for_update(skip_locked=True)
        .filter(status=OutboxStatus.SENDING, lease_expires_at__lt=now)
        .order_by("lease_expires_at", "id")
    )


def claim_due_pending_query(now: datetime) -> QuerySet[OutboxMessage]:
    """Return the claim's query for pending messages due at ``now`` (aware datetime), oldest first.

    Locks with SKIP LOCKED; walks the partial index outbox_pending_due in its order, so taking the
    first row reads one index entry, not the backlog. Raises nothing itself.
    """
    return (
        OutboxMessage.objects.select_for_update(skip_locked=True)
        .filter(status=OutboxStatus.PENDING, due_at__lte=now)
        .order_by("due_at", "id")
    )


def _claim_one(*, lease_seconds: int) -> tuple[OutboxMessage | None, bool]:
    """Lease (True) or fail (False, see outbox_message_claim) the oldest due message; (None, False) when none is due."""
    now = db_now()
    with transaction.atomic():
        # Two queries, each matching one partial index (mailer.models.OutboxMessage.Meta): with one
        # OR'ed query PostgreSQL sorted the whole due backlog for every claim (a 100,000-row backlog
        # drained at 3 messages/s). Expired leases first: they are few, and the oldest work.
        message = claim_expired_lease_query(now).first() or claim_due_pending_query(now).first()
        if message is None:
            return None, False
        # A row taken over from an expired lease: one more attempt with no known outcome.
        if message.status == OutboxStatus.SENDING and _unsettled_attempt(message=message, detail=LEASE_EXPIRED):
            message.status = OutboxStatus.FAILED
            message.lease_token = message.lease_expires_at = None
            message.save(
                update_fields=[
                    *("status", "lease_token", "lease_expires_at"),
                    *("last_error", "unsettled_attempts", "gave_up"),
                ]
            )
            return message, False
        message.status = OutboxStatus.SENDING
        message.lease_token = uuid.uuid4()
        message.lease_expires_at = now + timedelta(seconds=lease_seconds)
        message.attempts += 1
        message.save(
            update_fields=["status", "lease_token", "lease_expires_at", "attempts", "last_error", "unsettled_attempts"]
        )
    return message, True


def outbox_message_mark_sent(*, message: OutboxMessage) -> bool:
    """Record ``message``, which the SMTP server accepted, as sent; return whether this call recorded it.

    Recorded while this mailer holds the lease, and also when the lease expired and nobody else
    holds it now (the row was released to pending, or its lease lapsed): the server accepted
    it, so sent is the truth, and recording it spares a resend. Not recorded (False, logged)
    when the row is already sent or another mailer leased it meanwhile (it may send it again,
    with the same Message-ID).
    """
    now = db_now()
    updated = (
        OutboxMessage.objects.filter(pk=message.pk)
        .exclude(status=OutboxStatus.SENT)
        .filter(Q(lease_token=message.lease_token) | ~Q(status=OutboxStatus.SENDING) | Q(lease_expires_at__lt=now))
        .update(status=OutboxStatus.SENT, sent_at=now, lease_token=None, lease_expires_at=None, last_error="")
    )
    if not updated:
        current = OutboxMessage.objects.filter(pk=message.pk).values_list("status", flat=True).first()
        logger.warning(
            "outbox %s: the SMTP server accepted %s, but the row was not recorded as sent: %s",
            message.pk,
            message.message_id,
            "it already was"
            if current == OutboxStatus.SENT
            else "this mailer's lease had expired and another mailer leased it again (it may send it once more)",
        )
    return bool(updated)


def outbox_message_release(*, message: OutboxMessage, error: str, permanent: bool | None = False) -> str:
    """Give a leased ``message`` back after a failed attempt: due again after a backoff, or failed.

    ``permanent``, as mailer.engine.outbox_error_classify says: True (no retry can succeed: fail
    now), False (transient: retry until the message is older than settings.MAILER_GIVE_UP_AFTER
    seconds (counted from its last retry by staff, if any; RFC 5321 §4.5.4.1), never because of an
    attempt count, then fail with a reason marked ``gave_up``), None (unknown outcome: retry, fail
    after settings.MAILER_MAX_ATTEMPTS such attempts in a row, marked ``gave_up``). Return what the
    caller logs: ``"failed for good: <reason>"`` or ``"will retry in N s: <reason>"``.
    """
    delay = min(2**message.attempts, BACKOFF_CAP_SECONDS)
    unsettled, gave_up = 0, False  # a known outcome ends a run of attempts without one
    if permanent:
        final = True
    elif permanent is None:
        final = gave_up = _unsettled_attempt(message=message, detail=error)
        error, unsettled = message.last_error, message.unsettled_attempts
    else:
        # A message staff retried (outbox_message_retry) gets the whole give-up time again.
        age = (db_now() - (message.requeued_at or message.created_at)).total_seconds()
        final = gave_up = age >= settings.MAILER_GIVE_UP_AFTER
        if final:
            error = (
                f"{GAVE_UP_PREFIX}not delivered within {settings.MAILER_GIVE_UP_AFTER} s of being queued "
                f"(MAILER_GIVE_UP_AFTER); the last error: {error}"
            )
    OutboxMessage.objects.filter(pk=message.pk, lease_token=message.lease_token).update(
        status=OutboxStatus.FAILED if final else OutboxStatus.PENDING,
        due_at=db_now() + timedelta(seconds=delay),
        lease_token=None,
        lease_expires_at=None,
        last_error=error[:2000],
        unsettled_attempts=unsettled,
        gave_up=gave_up,
    )
    return f"failed for good: {error}" if final else f"will retry in {delay} s: {error}"


def outbox_release_expired_leases() -> int:
    """Make messages whose lease expired unsent due again now; return how many.

    Each counts one more attempt with no outcome (see outbox_message_claim): after
    settings.MAILER_MAX_ATTEMPTS in a row it is failed with the reason instead.
    """
    now = db_now()
    released = 0
    with transaction.atomic():
        expired = OutboxMessage.objects.select_for_update(skip_locked=True).filter(
            status=OutboxStatus.SENDING, lease_expires_at__lt=now
        )
        for message in expired:
            final = _unsettled_attempt(message=message, detail=LEASE_EXPIRED)
            message.status = OutboxStatus.FAILED if final else OutboxStatus.PENDING
            message.lease_token = message.lease_expires_at = None
            message.due_at = now
            message.save(
                update_fields=[
                    *("status", "lease_token", "lease_expires_at", "due_at"),
                    *("last_error", "unsettled_attempts", "gave_up"),
                ]
            )
            if final:
                logger.warning("outbox %s: failed for good: %s", message.pk, message.last_error)
            released += 1
    return released


def mailer_heartbeat_record(*, hostname: str, pid: int, started_at) -> None:
    """Record that the mailer ``hostname:pid`` is alive now (one upsert)."""
    MailerHeartbeat.objects.update_or_create(
        name=f"{hostname}:{pid}",
        defaults={"hostname": hostname, "pid": pid, "started_at": started_at, "beat_at": db_now()},
    )


def mailer_heartbeat_clear(*, hostname: str, pid: int) -> None:
    """Remove the heartbeat of a mailer that stops gracefully."""
    MailerHeartbeat.objects.filter(name=f"{hostname}:{pid}").delete()


# One batch of the sent-rows clean-up: oldest sent first through the partial index outbox_sent_at,
# rows named by ctid (a Tid Scan, not a join over the table), locked rows skipped. now(), the database's
# clock, is stable (clock_timestamp() is volatile, so no index condition) and fresh: one batch a transaction.
DELETE_SENT_BATCH_SQL = """
    DELETE FROM mailer_outboxmessage WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM mailer_outboxmessage
        WHERE status = 'sent' AND sent_at < now() - make_interval(days => %s)
        ORDER BY sent_at LIMIT %s FOR UPDATE SKIP LOCKED
    ))
"""


def outbox_delete_sent(*, retention_days: int | None = None, batch: int | None = None) -> int:
    """Delete sent messages older than ``retention_days`` (default settings.MAILER_SENT_RETENTION_DAYS);
    return how many rows (int).

    ``batch`` (default settings.CLEANUP_BATCH_SIZE) rows per statement, each its own transaction,
    until a batch comes back short: every statement stays short whatever the backlog. Failed and
    pending rows are kept (staff retry those). A message's idempotency key is free again once its
    row is gone, so the retention must outlast any replay of what wrote it. Raises
    django.db.DatabaseError as the database does (the next run resumes).
    """
    retention_days = settings.MAILER_SENT_RETENTION_DAYS if retention_days is None else retention_days
    batch = settings.CLEANUP_BATCH_SIZE if batch is None else batch
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(DELETE_SENT_BATCH_SQL, [retention_days, batch])
            count = cursor.rowcount
        deleted += count
        if count < batch:
            return deleted
