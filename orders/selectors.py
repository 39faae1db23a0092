"""Reads of orders for the pages: what is true about an order's confirmation email."""

from dataclasses import dataclass

from mailer.models import OutboxStatus
from mailer.selectors import outbox_message_gave_up, outbox_message_get
from orders.models import Order


@dataclass(frozen=True)
class ConfirmationState:
    """Where the order's confirmation (or, for a failed payment, its notice) stands.

    ``state`` is ``waiting`` (the order is not processed yet, no message exists), ``queued``
    (in the outbox, not sent yet, possibly between retries), ``sent`` (the SMTP server accepted
    it) or ``failed`` (refused for good). ``gave_up`` tells a failure's cause: True when the mail
    system could not deliver it in time (mailer.selectors.outbox_message_gave_up), False when
    the address (or the message) was refused.
    """

    state: str
    gave_up: bool = False


def order_confirmation(*, order: Order) -> ConfirmationState:
    """Return the state of ``order``'s confirmation email, read from the mailer's outbox."""
    message = outbox_message_get(key=order.confirmation_key)
    if message is None:
        return ConfirmationState("waiting")
    if message.status == OutboxStatus.SENT:
        return ConfirmationState("sent")
    if message.status == OutboxStatus.FAILED:
        return ConfirmationState("failed", gave_up=outbox_message_gave_up(message=message))
    return ConfirmationState("queued")
