"""RQ jobs of the orders app: thin interfaces that take primitive ids and call one service."""

import uuid

from django.template.loader import get_template
from django.urls import reverse

from core import context
from orders import money
from orders.checkout import checkout_sessions_clear_expired
from orders.queueing import orders_sweep_pending
from orders.services import order_process


def process_order(order_id: str) -> str:
    """Process the order ``order_id`` (a UUID string); return its status afterwards.

    Every line logged meanwhile (the confirmation email's too, see OutboxMessage.log_context)
    carries the order id.
    """
    with context.bind(order_id=order_id):
        return order_process(order_id=order_id).status


def sweep_pending_orders() -> int:
    """Re-enqueue orders stuck in pending; return how many (periodic, see settings.PERIODIC_JOBS)."""
    return orders_sweep_pending()


def clear_expired_sessions() -> None:
    """Delete expired sessions and their checkouts (periodic, see settings.PERIODIC_JOBS)."""
    checkout_sessions_clear_expired()


def warm_up() -> None:
    """Load what every order job needs and a new process lacks: babel's data for the shop's prices
    (orders.money.warm_up), the confirmation email's compiled templates (Django's cached template
    loader) and the URL resolver its order link is reversed with; return None. Called by the worker
    before it forks its first work horse (processes.worker.WORK_HORSE_PRELOAD): every horse inherits
    them.
    """
    money.warm_up()
    for name in ("orders/email/confirmation_subject.txt", "orders/email/confirmation.txt"):
        get_template(name)
    reverse("order-detail", kwargs={"order_id": uuid.UUID(int=0)})
