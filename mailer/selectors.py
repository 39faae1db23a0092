"""Reads of the email outbox for other apps (HackSoft's selectors: queries, no side effects)."""

from mailer.models import OutboxMessage


def outbox_message_get(*, key: str) -> OutboxMessage | None:
    """Return the outbox message of business event ``key`` (see ``outbox_message_create``), or None."""
    return OutboxMessage.objects.filter(key=key).first()
