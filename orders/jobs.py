"""RQ jobs of the orders app: thin interfaces that take primitive ids and call one service."""

from orders.checkout import checkout_sessions_clear_expired
from orders.services import order_process, orders_sweep_pending
from project import context


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
