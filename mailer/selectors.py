"""Reads of the email outbox and the mailers' heartbeats (HackSoft's selectors: queries, no side effects)."""

from datetime import timedelta

from core.dbclock import db_now
from mailer.models import MailerHeartbeat, OutboxMessage, OutboxStatus


def outbox_message_get(*, key: str) -> OutboxMessage | None:
    """Return the outbox message of business event ``key`` (see ``outbox_message_create``), or None."""
    return OutboxMessage.objects.filter(key=key).first()


def outbox_message_gave_up(*, message: OutboxMessage) -> bool:
    """Return True when ``message`` failed because the mailer gave up delivering it (the SMTP server
    unreachable or refusing transiently past MAILER_GIVE_UP_AFTER, or attempts with no outcome),
    False when it is not failed or failed because the address or the message was refused."""
    return message.status == OutboxStatus.FAILED and message.gave_up


def mailer_alive(*, hostname: str | None, max_age: float) -> int:
    """Return how many mailers on ``hostname`` (None: any host) beat within the last ``max_age`` seconds."""
    beats = MailerHeartbeat.objects.filter(beat_at__gte=db_now() - timedelta(seconds=max_age))
    return (beats if hostname is None else beats.filter(hostname=hostname)).count()
