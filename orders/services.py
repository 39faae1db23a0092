"""Order operations: create at checkout, enqueue, process idempotently, sweep stuck orders.

Each mutation runs in one transaction and locks through ``orders.locks.order_lock``; after
taking the lock it re-checks the state and returns quietly when the work is done already,
which is what makes retries, double clicks and duplicate jobs harmless.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

import django_rq
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus, Retry
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry

from core import context
from core.errors import ApplicationError
from core.queues import DEFAULT_QUEUE, redis_connection
from mailer.models import OutboxMessage
from mailer.services import outbox_message_create
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
    order_job_id,
)
from orders.money import format_money
from orders.payments import PaymentDeclined, get_gateway
from orders.selectors import order_failure_message, order_get_by_idempotency_key

logger = logging.getLogger(__name__)
# Times RQ puts an order's job straight back at the front of its queue when it fails or its work
# horse dies (kill -9, out of memory): recovery in seconds while the worker lives, without waiting
# for the sweep. Bounded, so an order that kills every horse cannot crash-loop a worker; past it
# the sweep takes over (orders_sweep_pending). A rerun is harmless: order_process is idempotent.
ORDER_JOB_RETRIES = 3


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
    Raise OrderRefused naming the product ("Only 1 Procfile mug left.", "Procfile mug is sold out.").
    """
    for line in order.lines.select_related("product").order_by("product_id"):
        taken = Product.objects.filter(pk=line.product_id, stock__gte=line.quantity).update(
            stock=F("stock") - line.quantity
        )
        if not taken:
            left = Product.objects.values_list("stock", flat=True).get(pk=line.product_id)
            name = line.product.name
            message = f"{name} is sold out." if left == 0 else f"Only {left} {name} left."
            raise OrderRefused(
                f"{message} Change your cart and place the order again.", extra={"product": line.product}
            )


def order_stock_return(*, order: Order) -> None:
    """Give each line's quantity of ``order`` back to its product's stock (a declined payment).

    Updates products in primary-key order (as order_stock_take). Call inside the transaction that
    moves ``order`` out of the state that held the stock, with the order locked, so that it runs
    once per taking.
    """
    for product_id, quantity in order.lines.order_by("product_id").values_list("product_id", "quantity"):
        Product.objects.filter(pk=product_id).update(stock=F("stock") + quantity)


def order_enqueue(*, order_id: uuid.UUID | str, at_front: bool = False, request_id: str | None = None) -> bool:
    """Enqueue ``orders.jobs.process_order(order_id)`` under the order's fixed job id.

    ``at_front`` puts it ahead of the queued orders (the sweep's recoveries are the oldest). A job
    that fails or whose work horse dies is retried at once, at the front, up to ORDER_JOB_RETRIES times.
    ``request_id`` (default: the log context's) goes into the job's ``meta["request_id"]``, which
    the worker binds while it performs the job (processes.worker.Worker).

    Return True when a job was enqueued, False when one with that id exists already or Redis
    is unreachable (the order stays pending in PostgreSQL and the scheduler's sweep enqueues
    it later, so checkout never fails because of Redis).
    """
    job_id = order_job_id(order_id)
    if request_id is None:
        request_id = context.current().get("request_id")
    try:
        django_rq.get_queue(DEFAULT_QUEUE, connection=redis_connection(DEFAULT_QUEUE)).enqueue(
            "orders.jobs.process_order",
            str(order_id),
            job_id=job_id,
            unique=True,
            result_ttl=3600,
            at_front=at_front,
            meta={"request_id": request_id} if request_id else None,
            retry=Retry(max=ORDER_JOB_RETRIES, enqueue_at_front=True),
        )
    except DuplicateJobError:
        return False
    except RedisError as exc:
        logger.warning("order %s not enqueued, Redis unavailable (%s); the sweep will retry", order_id, exc)
        return False
    return True


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

    All in one transaction with the order locked. An order that is no longer pending is
    returned untouched; the gateway is charged with the order's idempotency key, so a rerun
    after a crash between charge and commit gets the same charge back instead of a second one.
    A declined payment moves the order to failed with the decline code as reason and gives its
    stock back (order_stock_return), in the same transaction.
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
            )
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


def orders_sweep_pending(*, older_than: float | None = None) -> int:
    """Re-enqueue pending orders older than ``older_than`` seconds that have no live job.

    A job is live when Redis will still run it: queued *and* in its queue, deferred or scheduled
    *and* in that registry, or started with a heartbeat newer than ``older_than`` (a running job's
    worker refreshes it every processes.worker.JOB_HEARTBEAT_SECONDS). Anything else is deleted and
    enqueued again: no job (Redis lost it or was down at checkout), a failed job (its work horse
    was killed past its retries), a started job whose whole worker was killed (no heartbeat any
    more), or a job whose status says queued while no queue holds it — a worker listening on
    several queues takes a job with a plain pop (rq's ``Queue.dequeue_any``) and marks it started
    only in the forked work horse, so a worker killed between the two leaves exactly that.
    Return how many orders were enqueued. Default ``older_than`` is settings.ORDER_STUCK_AFTER
    (seconds).

    The sweep runs every few seconds (settings.ORDER_SWEEP_INTERVAL), also while a backlog of
    orders waits in the queue: it reads the queue once and the orders' jobs in one pipeline, so a
    pass costs a few Redis round trips whatever the number of pending orders.
    """
    older_than = settings.ORDER_STUCK_AFTER if older_than is None else older_than
    cutoff = timezone.now() - timedelta(seconds=older_than)
    pending = dict(
        Order.objects.filter(status=OrderStatus.PENDING, created_at__lt=cutoff).values_list("id", "request_id")
    )
    if not pending:
        return 0
    order_ids = list(pending)
    connection = redis_connection(DEFAULT_QUEUE)
    # The queue is read before the jobs: a job popped in between says started (live) by then,
    # while the other order would take a job queued after the read for a lost one.
    queued = set(Queue(DEFAULT_QUEUE, connection=connection).get_job_ids())
    jobs = Job.fetch_many([order_job_id(order_id) for order_id in order_ids], connection=connection)
    enqueued = 0
    for order_id, job in zip(order_ids, jobs, strict=True):
        if job is not None:
            status = job.get_status(refresh=False)
            if status == JobStatus.QUEUED and job.origin == DEFAULT_QUEUE:
                if job.id in queued:
                    continue
            elif _job_is_live(job, cutoff=cutoff):
                continue
            job.delete()
        # The checkout's request id (the sweep has none): the recovered job's lines join the checkout's.
        if order_enqueue(order_id=order_id, at_front=True, request_id=pending[order_id]):
            enqueued += 1
            logger.info("order %s re-enqueued (job was %s)", order_id, "missing" if job is None else status)
    return enqueued


def order_requeue(*, order_id: uuid.UUID | str, cutoff, request_id: str | None = None) -> bool:
    """Enqueue the order's processing job at the front unless Redis still runs the one it has.

    ``request_id`` goes with the job as in order_enqueue (default: the log context's).

    ``cutoff`` (an aware datetime): a started job whose last heartbeat is older is dead. A job
    that is not live (see orders_sweep_pending) is deleted first, since its fixed id would make
    the new enqueue a no-op. Return True when a job was enqueued; False when a live job exists
    or Redis is unreachable (the sweep enqueues the order later). Raise RedisError only from the
    job lookup (the caller decides: the sweep fails its run, staff see a message).
    """
    job_id = order_job_id(order_id)
    try:
        job = Job.fetch(job_id, connection=redis_connection(DEFAULT_QUEUE))
    except NoSuchJobError:
        job = None
    if job is not None:
        status = job.get_status(refresh=False)
        if _job_is_live(job, cutoff=cutoff):
            return False
        job.delete()
    if not order_enqueue(order_id=order_id, at_front=True, request_id=request_id or None):
        return False
    logger.info("order %s re-enqueued (job was %s)", order_id, "missing" if job is None else status)
    return True


def _job_is_live(job, *, cutoff) -> bool:
    """Return True when Redis will still run ``job``: its status and where it is agree."""
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        return Queue(job.origin, connection=job.connection).get_job_position(job.id) is not None
    if status == JobStatus.DEFERRED:
        return job.id in DeferredJobRegistry(job.origin, connection=job.connection)
    if status == JobStatus.SCHEDULED:
        return job.id in ScheduledJobRegistry(job.origin, connection=job.connection)
    if status == JobStatus.STARTED:
        return job.last_heartbeat is not None and job.last_heartbeat >= cutoff
    return False
