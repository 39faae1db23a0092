"""Staff operations on orders (the admin's actions call these; they hold no logic of their own).

Each is safe to run twice and leaves a row in the order's status history (OrderStatusChange,
with the staff user as ``actor``): a status change, or a note (same status before and after)
when no status changed. Like every order mutation, each runs in one transaction with the order
locked (orders.locks.order_lock) and decides from the state it finds under the lock.
"""

import enum
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction

from core.dbclock import db_now
from core.errors import ApplicationError
from mailer.models import OutboxMessage
from mailer.selectors import outbox_message_get
from orders.locks import order_lock
from orders.models import OrderStatus, OrderStatusChange, PaymentMethod, StaffRequest
from orders.notifications import order_confirmation_create, order_shipped_notice_create
from orders.queueing import order_requeue
from orders.services import order_set_status, order_stock_take

logger = logging.getLogger(__name__)
# Characters: an internal note, a carrier's tracking reference (its column's length).
MAX_NOTE = 2000
MAX_TRACKING = 100


class Rerun(enum.StrEnum):
    """What order_rerun did: the value is the sentence staff read after the order's id."""

    RESTARTED = "had failed: back to pending, processing enqueued (a new payment attempt)"
    REQUEUED = "is pending: processing enqueued again"
    PAID = "is paid already: nothing to do (it is never charged twice)"
    NEEDS_METHOD = (
        "failed: not re-run. A declined card is never charged again silently: retry its payment on its "
        "page, choosing the payment method"
    )


# The actor of a move the shopper made (paying again after a decline): no staff username has
# parentheses (Django's username validator allows letters, digits and @.+-_).
SHOPPER = "(shopper)"


def order_pay_again(*, order_id: uuid.UUID | str, payment_method: str) -> Rerun:
    """The shopper pays a failed (declined) order again with ``payment_method`` (a PaymentMethod
    value): the order goes back to pending as a new payment attempt with its own idempotency key
    (orders.services.order_payment_key; the declined attempts took no money) and is processed by
    a worker as at checkout. Recorded in the status history with the actor SHOPPER.

    Return Rerun.RESTARTED; REQUEUED when the order is pending already (a second press: nothing
    more is done, its job is left alone); PAID for a paid order. Raise OrderRefused when the stock
    its decline gave back is gone meanwhile (nothing changes), ValueError for an unknown method,
    Order.DoesNotExist for an unknown id."""
    if payment_method not in PaymentMethod.values:
        raise ValueError(f"unknown payment method {payment_method!r}")
    with transaction.atomic(durable=True):
        order = order_lock(order_id=order_id)
        if order.status != OrderStatus.FAILED:
            return Rerun.PAID if order.status == OrderStatus.PAID else Rerun.REQUEUED
        _restart(order=order, payment_method=payment_method, actor=SHOPPER, who="paid again by the shopper")
    logger.info("order %s: paid again by the shopper with %s", order.pk, payment_method)
    return Rerun.RESTARTED


def _restart(*, order, payment_method: str, actor: str, who: str) -> None:
    """Move the locked failed ``order`` back to pending with ``payment_method``, its stock taken
    again (OrderRefused when gone), and enqueue it after commit. Call inside the transaction."""
    order_stock_take(order=order)
    if order.payment_method != payment_method:
        order.payment_method = payment_method
        order.save(update_fields=["payment_method", "updated_at"])
    method = PaymentMethod(payment_method).label
    order_set_status(
        order=order, status=OrderStatus.PENDING, reason=f"{who} ({method}): a new payment attempt", actor=actor
    )
    cutoff = db_now() - timedelta(seconds=settings.ORDER_STUCK_AFTER)
    transaction.on_commit(lambda: order_requeue(order_id=order.pk, cutoff=cutoff), robust=True)


def order_rerun(*, order_id: uuid.UUID | str, actor: str, payment_method: str | None = None) -> Rerun:
    """Run the processing of the order ``order_id`` again ("re-run processing"); return what was done.

    - pending (stuck): a note in the history, and the processing job enqueued at the front unless
      Redis still runs one (orders.queueing.order_requeue, after commit).
    - failed (payment declined): only with a ``payment_method`` (a PaymentMethod value; the
      admin's bulk action has none and gets NEEDS_METHOD, nothing done: a declined card is never
      charged again silently). Back to pending with that method (failed -> pending, recorded
      with ``actor``), then enqueued. The next attempt charges with a new idempotency key
      (orders.services.order_payment_key): the declined attempts took no money.
    - paid: nothing (no row, no job); the caller tells staff so.

    A failed order whose stock cannot be taken again stays failed (the business rule's
    ApplicationError propagates and nothing is written). When Redis is unreachable the change
    still commits and the scheduler's sweep enqueues the pending order later.

    Twice in a row is harmless: the second finds the order pending (a note; its live job is left
    alone) or paid. The charge itself is idempotent per attempt key and a processed order is
    never processed again (orders.services.order_process), so no order is charged twice.
    ``actor`` is the staff user's username (non-empty). Raise ValueError for an unknown method,
    Order.DoesNotExist for an unknown id.
    """
    with transaction.atomic(durable=True):
        order = order_lock(order_id=order_id)
        if order.status == OrderStatus.PAID:
            return Rerun.PAID
        if order.status == OrderStatus.FAILED:
            if payment_method is None:
                return Rerun.NEEDS_METHOD
            if payment_method not in PaymentMethod.values:
                raise ValueError(f"unknown payment method {payment_method!r}")
            # Its decline gave the stock back: take it again, or refuse the re-run (OrderRefused
            # rolls the whole change back and staff see its message).
            _restart(order=order, payment_method=payment_method, actor=actor, who="re-run processing")
            outcome = Rerun.RESTARTED
        else:
            OrderStatusChange.objects.create(
                order=order, from_status=order.status, to_status=order.status, reason="re-run processing", actor=actor
            )
            outcome = Rerun.REQUEUED
            # A started job with a heartbeat younger than this is alive: the sweep's own rule.
            cutoff = db_now() - timedelta(seconds=settings.ORDER_STUCK_AFTER)
            # robust: with Redis down the change stands and the sweep enqueues the pending order later.
            transaction.on_commit(lambda: order_requeue(order_id=order.pk, cutoff=cutoff), robust=True)
    logger.info("order %s: re-run by %s: %s", order.pk, actor, outcome.name.lower())
    return outcome


class ConfirmationNotSent(Exception):
    """The order has no confirmation to resend yet (it is still pending)."""


def order_confirmation_resend(*, order_id: uuid.UUID | str, actor: str, token: str) -> tuple[OutboxMessage, bool]:
    """Put a new copy of the paid or failed order's confirmation in the outbox ("resend confirmation").

    A resend is a new message, with its own outbox row and so its own Message-ID (a receiver
    that dropped the first as a repeat keeps this one). ``token`` names one request of staff
    (the admin's confirmation form carries a fresh one, 32 hex digits): the outbox key is
    ``"<confirmation_key>:resend:<token>"``, so the same form submitted twice (a double click, a
    retried POST) puts one message in the outbox, and each new request another. Return
    ``(message, created)``; a new message is noted in the history with ``actor``.
    Raise ConfirmationNotSent for a pending order, ValueError for a token that is not 32 hex
    digits, Order.DoesNotExist for an unknown id.
    """
    token = uuid.UUID(hex=token).hex  # ValueError unless a UUID: the key's length stays bounded
    with transaction.atomic(durable=True):
        order = order_lock(order_id=order_id)
        if order.status == OrderStatus.PENDING:
            raise ConfirmationNotSent(f"order {order.pk} is pending: its confirmation is sent once it is processed")
        key = f"{order.confirmation_key}:resend:{token}"
        existing = outbox_message_get(key=key)
        if existing is not None:
            return existing, False
        message = order_confirmation_create(order=order, key=key)
        OrderStatusChange.objects.create(
            order=order,
            from_status=order.status,
            to_status=order.status,
            reason=f"confirmation resent: outbox message {message.pk}, Message-ID {message.message_id}",
            actor=actor,
        )
    logger.info("order %s: confirmation resent by %s as outbox %s", order.pk, actor, message.pk)
    return message, True


class StaffActionRefused(ApplicationError):
    """A staff action the order's state does not allow (shipping an unpaid order); ``message`` says why."""


def _staff_request(*, order, token: str, kind: str) -> bool:
    """Record the staff request ``token`` (32 hex digits) for ``order``; return False when that
    token was recorded before (the same form sent again: do nothing). Call under the order's lock."""
    _, created = StaffRequest.objects.get_or_create(token=uuid.UUID(hex=token), defaults={"order": order, "kind": kind})
    return created


def order_note_add(*, order_id: uuid.UUID | str, actor: str, text: str, token: str) -> bool:
    """Add an internal note (``text``, 1-2,000 characters once stripped) to the order's status
    history, signed by ``actor`` (the staff user's username); shoppers never see it. ``token``
    (32 hex digits) names the note's form: sent twice, it adds one note. Return True when the
    note was added, False for a repeat. Raise StaffActionRefused for an empty or too long note,
    ValueError for a token that is not 32 hex digits, Order.DoesNotExist for an unknown id."""
    text = text.strip()
    if not text or len(text) > MAX_NOTE:
        raise StaffActionRefused(f"Write a note of 1 to {MAX_NOTE:,} characters.")
    uuid.UUID(hex=token)
    with transaction.atomic(durable=True):
        order = order_lock(order_id=order_id)
        if not _staff_request(order=order, token=token, kind="note"):
            return False
        OrderStatusChange.objects.create(
            order=order, from_status=order.status, to_status=order.status, reason=f"note: {text}", actor=actor
        )
    return True


def order_ship(*, order_id: uuid.UUID | str, actor: str, tracking: str, token: str) -> bool:
    """Mark the paid order shipped with the carrier's ``tracking`` reference (1-100 characters
    once stripped), by ``actor``: its shipping time (the database's clock), a row in its status
    history, and the email telling the shopper (outbox key ``order-shipped-<id>``: one per
    order). ``token`` (32 hex digits) names the form: sent twice, it ships once. Return True when
    it was shipped now, False when this form was sent before.
    Raise StaffActionRefused for an order not paid or shipped already (with its reference) and
    for a bad reference, ValueError for a bad token, Order.DoesNotExist for an unknown id."""
    tracking = tracking.strip()
    if not tracking or len(tracking) > MAX_TRACKING:
        raise StaffActionRefused(f"Enter the carrier's tracking reference (1 to {MAX_TRACKING} characters).")
    uuid.UUID(hex=token)
    with transaction.atomic(durable=True):
        order = order_lock(order_id=order_id)
        if not _staff_request(order=order, token=token, kind="ship"):
            return False
        if order.shipped_at is not None:
            raise StaffActionRefused(
                f"Order {order.reference} was shipped already (tracking {order.tracking_reference})."
            )
        if order.status != OrderStatus.PAID:
            raise StaffActionRefused(f"Order {order.reference} is {order.status}: only a paid order is shipped.")
        order.shipped_at, order.tracking_reference = db_now(), tracking
        order.save(update_fields=["shipped_at", "tracking_reference", "updated_at"])
        OrderStatusChange.objects.create(
            order=order,
            from_status=order.status,
            to_status=order.status,
            reason=f"shipped (tracking {tracking})",
            actor=actor,
        )
        order_shipped_notice_create(order=order)
    logger.info("order %s: shipped by %s (tracking %s)", order.pk, actor, tracking)
    return True
