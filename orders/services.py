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
from django.template.loader import render_to_string
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry

from mailer.services import outbox_message_create
from orders.locks import order_lock
from orders.models import (
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
from project.errors import ApplicationError
from project.queues import DEFAULT_QUEUE

logger = logging.getLogger(__name__)


class InvalidStatusTransition(Exception):
    """A status change that the pipeline (ORDER_STATUS_PIPELINE) does not allow."""


class OrderRefused(ApplicationError):
    """Lines that no order may have; ``message`` is a sentence for the shopper."""


@dataclass(frozen=True)
class LineRequest:
    """One requested checkout line: a product's primary key and a quantity (1–99)."""

    product_id: int
    quantity: int


def order_create(
    *, email: str, lines: list[LineRequest], idempotency_key: uuid.UUID, payment_method: str = PaymentMethod.VISA
) -> tuple[Order, bool]:
    """Create a pending order and its lines in one transaction; enqueue processing after commit.

    ``idempotency_key`` is the checkout form's one-time token: a second call with the same key
    returns the first order and creates nothing. Return ``(order, created)``.
    Raise OrderRefused (an ApplicationError) when ``lines`` is empty, names a product twice, or a product is inactive or
    has another currency; Product.DoesNotExist for an unknown product.
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
    currencies = {products[pid].currency for pid in product_ids}
    if len(currencies) != 1:
        raise OrderRefused("All products of an order must share one currency.")
    total = sum(products[line.product_id].price * line.quantity for line in lines)
    try:
        with transaction.atomic():
            order = Order.objects.create(
                idempotency_key=idempotency_key,
                email=email,
                currency=currencies.pop(),
                total=total,
                payment_method=payment_method,
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
            transaction.on_commit(lambda: order_enqueue(order_id=order.pk))
    except IntegrityError:
        # A concurrent submission of the same token committed first: that order is the answer.
        existing = order_get_by_idempotency_key(key=idempotency_key)
        if existing is None:
            raise
        return existing, False
    logger.info(
        "order %s created: %d line(s), total %s", order.pk, len(lines), format_money(order.total, order.currency)
    )
    return order, True


def order_enqueue(*, order_id: uuid.UUID | str, at_front: bool = False) -> bool:
    """Enqueue ``orders.jobs.process_order(order_id)`` under the order's fixed job id.

    ``at_front`` puts it ahead of the queued orders (the sweep's recoveries are the oldest).

    Return True when a job was enqueued, False when one with that id exists already or Redis
    is unreachable (the order stays pending in PostgreSQL and the scheduler's sweep enqueues
    it later, so checkout never fails because of Redis).
    """
    job_id = order_job_id(order_id)
    try:
        django_rq.get_queue(DEFAULT_QUEUE).enqueue(
            "orders.jobs.process_order", str(order_id), job_id=job_id, unique=True, result_ttl=3600, at_front=at_front
        )
    except DuplicateJobError:
        return False
    except RedisError as exc:
        logger.warning("order %s not enqueued, Redis unavailable (%s); the sweep will retry", order_id, exc)
        return False
    return True


def order_set_status(*, order: Order, status: str, reason: str = "") -> Order:
    """Move a locked ``order`` to ``status`` and write the audit row; same status is a no-op.

    Raise InvalidStatusTransition for a move the pipeline does not allow.
    """
    if order.status == status:
        return order
    if status not in ORDER_STATUS_PIPELINE[order.status]:
        raise InvalidStatusTransition(f"order {order.pk}: {order.status} -> {status} is not allowed")
    OrderStatusChange.objects.create(order=order, from_status=order.status, to_status=status, reason=reason)
    order.status = status
    order.failure_reason = reason if status == OrderStatus.FAILED else order.failure_reason
    order.save(update_fields=["status", "failure_reason", "updated_at"])
    return order


def order_process(*, order_id: uuid.UUID | str) -> Order:
    """Charge a pending order, mark it paid and put its confirmation email in the outbox.

    All in one transaction with the order locked. An order that is no longer pending is
    returned untouched; the gateway is charged with the order's idempotency key, so a rerun
    after a crash between charge and commit gets the same charge back instead of a second one.
    A declined payment moves the order to failed with the decline code as reason.
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
                idempotency_key=str(order.idempotency_key),
                payment_method=order.payment_method,
            )
        except PaymentDeclined as exc:
            order_set_status(order=order, status=OrderStatus.FAILED, reason=f"payment declined ({exc.code})")
            _confirmation_create(order=order)
            logger.info("order %s failed: payment declined (%s)", order.pk, exc.code)
            return order
        Charge.objects.create(order=order, gateway_charge_id=charge_id, amount=order.total, currency=order.currency)
        order_set_status(order=order, status=OrderStatus.PAID)
        _confirmation_create(order=order)
    logger.info("order %s paid %s, charge %s", order.pk, format_money(order.total, order.currency), charge_id)
    return order


def _confirmation_create(*, order: Order) -> None:
    """Put the email telling the shopper how a processed (paid or failed) ``order`` ended in the outbox."""
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
    outbox_message_create(key=order.confirmation_key, to=order.email, subject=subject, body=body)


def orders_sweep_pending(*, older_than: float | None = None) -> int:
    """Re-enqueue pending orders older than ``older_than`` seconds that have no live job.

    A job is live when Redis will still run it: queued *and* in its queue, deferred or scheduled
    *and* in that registry, or started with a heartbeat newer than ``older_than``. Anything else
    is deleted and enqueued again: no job (Redis lost it or was down at checkout), a failed job (its
    work horse was killed), or a job whose status says queued while no queue holds it — a worker
    listening on several queues takes a job with a plain pop (rq's ``Queue.dequeue_any``) and
    marks it started only in the forked work horse, so a worker killed between the two leaves
    exactly that. Return how many orders were enqueued. Default ``older_than`` is
    settings.ORDER_STUCK_AFTER (seconds).
    """
    older_than = settings.ORDER_STUCK_AFTER if older_than is None else older_than
    cutoff = timezone.now() - timedelta(seconds=older_than)
    connection = django_rq.get_connection(DEFAULT_QUEUE)
    enqueued = 0
    for order in Order.objects.filter(status=OrderStatus.PENDING, created_at__lt=cutoff).only("id").iterator():
        try:
            job = Job.fetch(order.job_id, connection=connection)
        except NoSuchJobError:
            job = None
        if job is not None:
            status = job.get_status(refresh=False)
            if _job_is_live(job, cutoff=cutoff):
                continue
            job.delete()
        if order_enqueue(order_id=order.pk, at_front=True):
            logger.info("sweep: order %s re-enqueued (job was %s)", order.pk, "missing" if job is None else status)
            enqueued += 1
    return enqueued


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
