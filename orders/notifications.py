"""Put the emails the shop sends about an order in the outbox: the confirmation of how it ended.

Written in the transaction that processes the order (orders.services.order_process), once per
order and outcome (the outbox key), or under a new key when staff resend it (orders.operations);
the mailer process sends it later (mailer.engine).
"""

from django.conf import settings
from django.template.loader import render_to_string

from mailer.models import OutboxMessage
from mailer.services import outbox_message_create
from orders.models import Order, OrderStatus
from orders.selectors import order_failure_message


def order_confirmation_create(*, order: Order, key: str | None = None) -> OutboxMessage:
    """Put the email telling the shopper how a processed (paid or failed) ``order`` ended in the outbox.

    ``key`` is the outbox key (default ``order.confirmation_key``: one per order and outcome).
    Return the outbox row (the existing one when ``key`` was used before).
    """
    context = {
        "order": order,
        "paid": order.status == OrderStatus.PAID,
        "lines": order.lines.select_related("product"),
        "reason": order_failure_message(reason=order.failure_reason),
        # Absolute: the shopper's mail client has no page to resolve a path against.
        "order_url": settings.SITE_URL + order.get_absolute_url(),
    }
    # A subject is one line (as Django's password-reset email does it).
    subject = "".join(render_to_string("orders/email/confirmation_subject.txt", context).splitlines())
    body = render_to_string("orders/email/confirmation.txt", context)
    return outbox_message_create(key=key or order.confirmation_key, to=order.email, subject=subject, body=body)


def order_shipped_notice_create(*, order: Order) -> OutboxMessage:
    """Put the email telling the shopper that the paid ``order`` was shipped, with its tracking
    reference, in the outbox (key ``order-shipped-<id>``: one per order); return the row."""
    context = {
        "order": order,
        "lines": order.lines.select_related("product"),
        "order_url": settings.SITE_URL + order.get_absolute_url(),
    }
    subject = "".join(render_to_string("orders/email/shipped_subject.txt", context).splitlines())
    body = render_to_string("orders/email/shipped.txt", context)
    return outbox_message_create(key=f"order-shipped-{order.pk}", to=order.email, subject=subject, body=body)
