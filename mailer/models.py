"""The transactional email outbox, drained by the ``mailer`` process type."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from mailer.validators import validate_deliverable_address


class OutboxStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending (leased)"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class OutboxMessage(models.Model):
    """One email to send; ``key`` makes it unique per business event (e.g. per order and kind).

    A mailer leases the row (status ``sending`` until ``lease_expires_at``) before sending; a
    lease that expires unsent (the mailer died) makes the row due again. ``message_uuid`` fixes
    the Message-ID across retries, so a receiver can drop a repeat (RFC 5322, section 3.6.4).
    """

    key = models.CharField(max_length=200, unique=True)
    message_uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    to_email = models.EmailField(validators=[validate_deliverable_address])
    subject = models.CharField(max_length=250)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # The database's clock, never the inserting host's: a due time compared with another host's
    # clock (a mailer's claim) must come from one clock.
    due_at = models.DateTimeField(db_default=Now(), editable=False)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    unsettled_attempts = models.PositiveIntegerField(
        default=0,
        help_text="Attempts in a row with no known outcome (a lease that expired, an unexpected error).",
    )
    gave_up = models.BooleanField(
        default=False, help_text="Failed because the mailer gave up delivering it, not because it was refused."
    )
    requeued_at = models.DateTimeField(
        null=True, blank=True, help_text="When staff last retried it; the give-up time counts from here."
    )
    # Null for rows of a previous release (a rolling deploy inserts those without the column).
    log_context = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="The request, job and order ids of what wrote it; the lines of its sending carry them.",
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["status", "due_at"], name="outbox_status_due"),
            # The claim's two queries (mailer.services._claim_one), each an index scan whatever the
            # backlog: the oldest due pending rows in order, and the few leases that expired.
            models.Index(fields=["due_at", "id"], name="outbox_pending_due", condition=Q(status="pending")),
            models.Index(fields=["lease_expires_at", "id"], name="outbox_sending_lease", condition=Q(status="sending")),
            # The retention clean-up's batches (mailer.services.outbox_delete_sent), oldest sent first.
            models.Index(fields=["sent_at"], name="outbox_sent_at", condition=Q(status="sent")),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=OutboxStatus.values), name="outbox_status_valid"),
            models.CheckConstraint(
                condition=~Q(status=OutboxStatus.SENDING)
                | Q(lease_expires_at__isnull=False, lease_token__isnull=False),
                name="outbox_sending_has_lease",
            ),
            models.CheckConstraint(
                condition=~Q(status=OutboxStatus.SENT) | Q(sent_at__isnull=False), name="outbox_sent_has_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} to {self.to_email} ({self.status})"

    @property
    def message_id(self) -> str:
        """Return the RFC 5322 Message-ID header value, the same for every attempt."""
        return f"<{self.message_uuid}@{settings.MESSAGE_ID_DOMAIN}>"


class MailerHeartbeat(models.Model):
    """Liveness of one running mailer process: its last pass, written at most every few seconds.

    ``manage.py probe mailer`` reads it (an exec liveness probe); a graceful stop deletes the row.
    """

    name = models.CharField(max_length=200, primary_key=True, help_text="host:pid")
    hostname = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["hostname", "beat_at"], name="mailerbeat_host_beat")]

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%H:%M:%S}"
