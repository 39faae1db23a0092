"""Reads of the catalogue and orders (HackSoft's selectors: queries, no side effects)."""

import uuid
from dataclasses import dataclass

from django.db.models import QuerySet

from mailer.models import OutboxStatus
from mailer.selectors import outbox_message_gave_up, outbox_message_get
from orders.models import Order, Product


def products_on_sale() -> QuerySet[Product]:
    """Return the active products, the catalogue's order."""
    return Product.objects.filter(is_active=True)


def order_get_by_idempotency_key(*, key: uuid.UUID) -> Order | None:
    """Return the order placed with idempotency ``key`` (its checkout's token), or None."""
    return Order.objects.filter(idempotency_key=key).first()


def orders_with_lines() -> QuerySet[Order]:
    """Return the orders, each fetched with its lines and their products (for an order's page)."""
    return Order.objects.prefetch_related("lines__product")


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
