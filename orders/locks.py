"""The one locking helper for orders (Saleor's lock_objects pattern).

Lock in a fixed order, orders by primary key before their lines, so two transactions that
touch the same orders never deadlock. Call only inside ``transaction.atomic()``.
"""

import uuid

from orders.models import Order, OrderLine


def order_lock(*, order_id: uuid.UUID | str) -> Order:
    """Lock the order ``order_id`` and then its lines (``SELECT … FOR UPDATE``); return the order.

    Raise Order.DoesNotExist when there is no such order.
    """
    order = Order.objects.select_for_update().get(pk=order_id)
    list(OrderLine.objects.select_for_update().filter(order=order).order_by("pk").values_list("pk", flat=True))
    return order
