"""Order state: create at checkout, take and give back stock, move through the status pipeline, process.

Each mutation runs in one transaction and locks through ``orders.locks.order_lock``; after
taking the lock it re-checks the state and returns quietly when the work is done already,
which is what makes retries, double clicks and duplicate jobs harmless. Enqueueing an order's
job and the sweep of stuck orders are orders.queueing's; the confirmation email is
orders.notifications'.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now
from rq.timeouts import JobTimeoutException

from core import context
from core.errors import ApplicationError
from orders.locks import order_lock
from orders.models import (
    ORDER_STATUS_BY_STAFF_ONLY,
    ORDER_STATUS_PIPELINE,
    Charge,
    Order,
    OrderLine,
    OrderStatus,
    OrderStatusChange,
    PaymentMethod,
    Product,
)
from orders.money import format_money
from orders.notifications import order_confirmation_create
from orders.payments import PaymentDeclined, PaymentTimeout, get_gateway
from orders.queueing import order_enqueue
from orders.selectors import order_get_by_idempotency_key, orders_payment_unsettled

logger = logging.getLogger(__name__)


class InvalidStatusTransition(Exception):
    """A status change that the pipeline (ORDER_STATUS_PIPELINE) does not allow."""


class OrderRefused(ApplicationError):
    """Lines that no order may have; ``message`` is a sentence for the shopper."""


@dataclass(frozen=True)
class LineRequest:
    """One requested checkout line: a product's primary key, a quantity (1–99) and, when the
    shopper was shown one, the unit price they agreed to (minor units; None: today's price)."""

    product_id: int
    quantity: int
    unit_price: int | None = None


class PriceChanged(OrderRefused):
    """A product's price is no longer the one the shopper was shown; nothing was created."""


def order_create(
    *,
    email: str,
    lines: list[LineRequest],
    idempotency_key: uuid.UUID,
    payment_method: str = PaymentMethod.VISA,
    request_id: str | None = None,
) -> tuple[Order, bool]:
    """Create a pending order and its lines in one transaction; enqueue processing after commit.

    ``request_id`` (default: the log context's, core.context, i.e. the checkout request's) is
    stored on the order and goes with its job and its email, so their log lines carry it.

    ``idempotency_key`` is the checkout form's one-time token: a second call with the same key
    returns the first order and creates nothing. Return ``(order, created)``.
    Stock is taken in the same transaction (order_stock_take): when a product has too few
    units left, nothing is created and nothing is charged.
    Raise OrderRefused (an ApplicationError) when ``lines`` is empty, names a product twice, or a product is inactive,
    has another currency or too little stock; PriceChanged (an OrderRefused) when a line's
    ``unit_price`` is not the product's price, checked again once the product rows are locked;
    Product.DoesNotExist for an unknown product.
    """
    existing = order_get_by_idempotency_key(key=idempotency_key)
    if existing is not None:
        return existing, False
    if not lines:
        raise OrderRefused("An order needs at least one line.")
    product_ids = [line.product_id for line in lines]
    if len(set(product_ids)) != len(product_ids):
        raise OrderRefused("Each product may appear on one line only.")
    products = Product.objects.in_bulk(product_ids)
    missing = set(product_ids) - set(products)
    if missing:
        raise Product.DoesNotExist(f"unknown product id(s): {sorted(missing)}")
    if any(not products[pid].is_active for pid in product_ids):
        raise OrderRefused("A product is no longer on sale.")
    _check_shown_prices(lines, {pid: product.price for pid, product in products.items()})
    currencies = {products[pid].currency for pid in product_ids}
    if len(currencies) != 1:
        raise OrderRefused("All products of an order must share one currency.")
    total = sum(products[line.product_id].price * line.quantity for line in lines)
    if request_id is None:
        request_id = context.current().get("request_id", "")
    try:
        with transaction.atomic():
            order = Order.objects.create(
                idempotency_key=idempotency_key,
                email=email,
                currency=currencies.pop(),
                total=total,
                payment_method=payment_method,
                request_id=request_id,
            )
            OrderLine.objects.bulk_create(
                OrderLine(
                    order=order,
                    product_id=line.product_id,
                    quantity=line.quantity,
                    unit_price=products[line.product_id].price,
                )
                for line in lines
            )
            # After the order row: a concurrent duplicate of this key waits on its unique index
            # and gets this order, instead of racing it for the stock and being told "sold out".
            order_stock_take(order=order)
            # Again now that the stock UPDATE holds the product rows: a price changed meanwhile
            # has committed (or waits for this transaction), so what is charged is what was shown.
            _check_shown_prices(lines, dict(Product.objects.filter(pk__in=product_ids).values_list("pk", "price")))
            transaction.on_commit(lambda: order_enqueue(order_id=order.pk, request_id=request_id))
    except IntegrityError:
        # A concurrent submission of the same token committed first: that order is the answer.
        existing = order_get_by_idempotency_key(key=idempotency_key)
        if existing is None:
            raise
        return existing, False
    logger.info(
        "order %s created: %d line(s), total %s",
        order.pk,
        len(lines),
        format_money(order.total, order.currency),
        extra={"order_id": str(order.pk)},
    )
    return order, True


def _check_shown_prices(lines: list[LineRequest], prices: dict[int, int]) -> None:
    """Raise PriceChanged when a line's shown ``unit_price`` differs from ``prices`` (product id -> minor units)."""
    for line in lines:
        if line.unit_price is not None and prices.get(line.product_id) != line.unit_price:
            raise PriceChanged("A price changed since this page was shown: review your cart and place the order again.")


def order_stock_take(*, order: Order) -> None:
    """Take each line's quantity of ``order`` from its product's stock; all lines or none.

    Each product is decremented with one conditional ``UPDATE … SET stock = stock - q WHERE
    stock >= q``, in product primary-key order so that concurrent orders never deadlock: under
    PostgreSQL's READ COMMITTED, a concurrent taker waits for the row and re-checks the condition
    against the committed stock, so two shoppers can never both take the last unit. Call inside
    ``transaction.atomic()``; on refusal, roll that transaction back (the units already taken
    for earlier lines are returned by the rollback).
    Raise OrderRefused naming the product (Product.shortage: "Only 1 left of Procfile mug.").
    """
    for line in order.lines.select_related("product").order_by("product_id"):
        taken = Product.objects.filter(pk=line.product_id, stock__gte=line.quantity).update(
            stock=F("stock") - line.quantity
        )
        if not taken:
            left = Product.objects.values_list("stock", flat=True).get(pk=line.product_id)
            raise OrderRefused(
                f"{line.product.shortage(left)} Change your cart and place the order again.",
                extra={"product": line.product},
            )


def order_stock_return(*, order: Order) -> None:
    """Give each line's quantity of ``order`` back to its product's stock (a declined payment).

    Updates products in primary-key order (as order_stock_take). Call inside the transaction that
    moves ``order`` out of the state that held the stock, with the order locked, so that it runs
    once per taking.
    """
    for product_id, quantity in order.lines.order_by("product_id").values_list("product_id", "quantity"):
        Product.objects.filter(pk=product_id).update(stock=F("stock") + quantity)


def order_set_status(*, order: Order, status: str, reason: str = "", actor: str = "") -> Order:
    """Move a locked ``order`` to ``status`` and write the audit row; same status is a no-op.

    ``actor`` is the staff user's username when staff asked for the move (empty for the shop's
    own processes). Back to pending, the failure reason is cleared (the history keeps it).
    Raise InvalidStatusTransition for a move the pipeline does not allow, and for a move of
    ORDER_STATUS_BY_STAFF_ONLY without an ``actor``.
    """
    if order.status == status:
        return order
    if status not in ORDER_STATUS_PIPELINE[order.status] or (
        (order.status, status) in ORDER_STATUS_BY_STAFF_ONLY and not actor
    ):
        raise InvalidStatusTransition(f"order {order.pk}: {order.status} -> {status} is not allowed")
    OrderStatusChange.objects.create(
        order=order, from_status=order.status, to_status=status, reason=reason, actor=actor
    )
    order.status = status
    if status == OrderStatus.FAILED:
        order.failure_reason = reason
    elif status == OrderStatus.PENDING:
        order.failure_reason = ""
    order.save(update_fields=["status", "failure_reason", "updated_at"])
    return order


def order_process(*, order_id: uuid.UUID | str) -> Order:
    """Charge a pending order, mark it paid and put its confirmation email in the outbox.

    A call to the provider that ends with no answer (PaymentTimeout, or RQ's JobTimeoutException
    when the job itself is cut) is counted on the order and its next try is put off
    (order_payment_retry_later) before the exception propagates.
    See _order_process for the rest.
    """
    try:
        return _order_process(order_id=order_id)
    except (PaymentTimeout, JobTimeoutException):
        order_payment_retry_later(order_id=order_id)
        raise


def order_payment_retry_later(*, order_id: uuid.UUID | str) -> float | None:
    """Count one more payment call of the pending order ``order_id`` that ended with no answer and
    put its next try off; return the delay in seconds, or None when the order is no longer pending.

    The delay is settings.PAYMENT_RETRY_BASE × 2^(n−1) seconds after the n-th such call, capped at
    settings.PAYMENT_RETRY_CAP: exponential backoff per order (the rule of AWS's "Exponential
    Backoff And Jitter", without the jitter: one client, one order). ``payment_retry_at`` is set
    from the database's clock, so hosts whose clocks differ agree on it; the sweep
    (orders.queueing.orders_sweep_pending) leaves the order alone until then. Past
    settings.PAYMENT_UNSETTLED_AFTER seconds the order is unsettled: a warning line here, at each
    (backed-off) retry. Raise Order.DoesNotExist for an unknown id.
    """
    with transaction.atomic(durable=True):
        order = order_lock(order_id=order_id)
        if order.status != OrderStatus.PENDING:
            return None
        order.payment_timeouts += 1
        delay = min(settings.PAYMENT_RETRY_CAP, settings.PAYMENT_RETRY_BASE * 2 ** min(order.payment_timeouts - 1, 32))
        order.payment_retry_at = Now() + timedelta(seconds=delay)
        order.save(update_fields=["payment_timeouts", "payment_retry_at", "updated_at"])
        unsettled = orders_payment_unsettled().filter(pk=order.pk).exists()
    if unsettled:
        logger.warning(
            "order %s: payment unsettled: %d calls to the provider had no answer; next try in %g s; "
            "check the provider for a charge with key %s",
            order.pk,
            order.payment_timeouts,
            delay,
            order.idempotency_key,
        )
    else:
        logger.info(
            "order %s: payment call %d had no answer; next try in %g s", order.pk, order.payment_timeouts, delay
        )
    return delay


def _order_process(*, order_id: uuid.UUID | str) -> Order:
    """Charge a pending order, mark it paid and put its confirmation email in the outbox.

    All in one transaction with the order locked. An order that is no longer pending is
    returned untouched; the gateway is charged with the order's idempotency key, so a rerun
    after a crash between charge and commit gets the same charge back instead of a second one.
    A declined payment moves the order to failed with the decline code as reason and gives its
    stock back (order_stock_return), in the same transaction.
    The call to the provider is bounded by ``settings.PAYMENT_TIMEOUT`` seconds (at most half the
    job's limit), so a provider slower than the job ends the call, not the job: the job fails
    with PaymentTimeout and the retry, with the same idempotency key, gets the charge the
    provider may have taken and settles the order without charging again.
    Raise Order.DoesNotExist for an unknown id; gateway errors other than a decline propagate
    (the job fails and the sweep retries it).
    """
    with transaction.atomic(durable=True):
        order = order_lock(order_id=order_id)
        if order.status != OrderStatus.PENDING:
            logger.info("order %s is %s already; nothing to do", order.pk, order.status)
            return order
        try:
            charge_id = get_gateway().charge(
                amount=order.total,
                currency=order.currency,
                idempotency_key=order_payment_key(order=order),
                payment_method=order.payment_method,
                timeout=settings.PAYMENT_TIMEOUT,
            )
        except PaymentTimeout as exc:
            logger.warning("order %s: %s; it stays pending and is retried with the same key", order.pk, exc)
            raise
        except PaymentDeclined as exc:
            order_set_status(order=order, status=OrderStatus.FAILED, reason=f"payment declined ({exc.code})")
            order_stock_return(order=order)
            order_confirmation_create(order=order)
            logger.info("order %s failed: payment declined (%s)", order.pk, exc.code)
            return order
        Charge.objects.create(order=order, gateway_charge_id=charge_id, amount=order.total, currency=order.currency)
        order_set_status(order=order, status=OrderStatus.PAID)
        order_confirmation_create(order=order)
    logger.info("order %s paid %s, charge %s", order.pk, format_money(order.total, order.currency), charge_id)
    return order


def order_payment_key(*, order: Order) -> str:
    """Return the idempotency key ``order`` is charged with now (a string for the gateway).

    The order's own ``idempotency_key`` until staff re-run a failed order; each such re-run
    (a failed -> pending change in its history) is a new attempt with the key
    ``"<idempotency_key>:rerun-<n>"``. A provider answers a key it has seen with the first
    outcome again (a decline stays a decline), so a new attempt needs a new key; and only a
    declined attempt (which took no money) is ever followed by another, so an order is charged
    at most once. Every attempt's key starts with the order's ``idempotency_key``.
    """
    reruns = order.status_changes.filter(from_status=OrderStatus.FAILED, to_status=OrderStatus.PENDING).count()
    return str(order.idempotency_key) if not reruns else f"{order.idempotency_key}:rerun-{reruns}"
