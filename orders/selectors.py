"""Reads of the catalogue and orders (HackSoft's selectors: queries, no side effects)."""

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Prefetch, QuerySet, Sum
from django.db.models.functions import Now

from mailer.models import OutboxStatus
from mailer.selectors import outbox_message_gave_up, outbox_message_get
from orders.models import LOW_STOCK, Order, OrderLine, OrderStatus, Product


def products_on_sale() -> QuerySet[Product]:
    """Return the active products, the catalogue's order."""
    return Product.objects.filter(is_active=True)


def order_get_by_idempotency_key(*, key: uuid.UUID) -> Order | None:
    """Return the order placed with idempotency ``key`` (its checkout's token), or None."""
    return Order.objects.filter(idempotency_key=key).first()


def orders_payment_unsettled() -> QuerySet[Order]:
    """Return the pending orders whose payment call had no answer and that are older than
    settings.PAYMENT_UNSETTLED_AFTER seconds (by the database's clock): the provider may have
    charged them while the shop does not know it yet. Staff check the provider's dashboard.
    """
    return Order.objects.filter(
        status=OrderStatus.PENDING,
        payment_timeouts__gt=0,
        created_at__lt=Now() - timedelta(seconds=settings.PAYMENT_UNSETTLED_AFTER),
    )


@dataclass(frozen=True)
class ShopDay:
    """The shop's day for the admin's index: orders placed since ``since`` (an aware datetime) and
    how many of them are paid or failed, the paid ones' takings as ``(minor units, currency)``
    pairs (one per currency, by code), and what needs staff now: orders pending payment, those
    unsettled at the provider (orders_payment_unsettled), active products at or below LOW_STOCK,
    paid orders not shipped yet."""

    since: datetime
    placed: int
    paid: int
    failed: int
    takings: list[tuple[int, str]]
    pending: int
    unsettled: int
    low_stock: int
    to_ship: int


def shop_day(*, since: datetime) -> ShopDay:
    """Return the ShopDay since ``since`` (the admin passes the start of today in TIME_ZONE), in
    five queries: today's orders by status and currency, pending, unsettled, low stock, to ship."""
    rows = list(
        Order.objects.filter(created_at__gte=since)
        .values("status", "currency")
        .annotate(count=Count("pk"), amount=Sum("total"))
        .order_by("currency")
    )
    paid = [row for row in rows if row["status"] == OrderStatus.PAID]
    return ShopDay(
        since=since,
        placed=sum(row["count"] for row in rows),
        paid=sum(row["count"] for row in paid),
        failed=sum(row["count"] for row in rows if row["status"] == OrderStatus.FAILED),
        takings=[(row["amount"], row["currency"]) for row in paid],
        pending=Order.objects.filter(status=OrderStatus.PENDING).count(),
        unsettled=orders_payment_unsettled().count(),
        low_stock=products_on_sale().filter(stock__lte=LOW_STOCK).count(),
        to_ship=Order.objects.filter(status=OrderStatus.PAID, shipped_at__isnull=True).count(),
    )


def orders_with_lines() -> QuerySet[Order]:
    """Return the orders, each fetched with its lines and their products (for an order's page).

    Lines and products in one query (a join), not one each: each round trip to PostgreSQL is a
    large part of the order page's time.
    """
    return Order.objects.prefetch_related(Prefetch("lines", queryset=OrderLine.objects.select_related("product")))


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


# What a shopper reads for a gateway's decline code (Stripe's codes and its advice to show a
# generic message for lost or stolen cards: https://docs.stripe.com/declines/codes).
DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "generic_decline": "Your card was declined.",
    "lost_card": "Your card was declined.",
    "stolen_card": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Please try again.",
}
# How orders.services.order_process records a decline in Order.failure_reason (the audit keeps the code).
_DECLINE_REASON = re.compile(r"^payment declined \((?P<code>[\w-]+)\)$")


def order_failure_message(*, reason: str) -> str:
    """Return the sentence a shopper reads for a failed order's stored ``reason``.

    A decline ("payment declined (card_declined)") becomes its message in DECLINE_MESSAGES ("Your
    card was declined."), an unknown decline code "Your payment was declined."; any other reason
    is already written for the shopper and is returned as it is.
    """
    match = _DECLINE_REASON.match(reason.strip())
    if match is None:
        return reason.strip()
    return DECLINE_MESSAGES.get(match["code"], "Your payment was declined.")


# The steps an order's page shows, in order; a failed order stops after "received".
ORDER_STEPS = (("received", "Order received"), ("paid", "Paid"), ("confirmation_sent", "Confirmation sent"))


@dataclass(frozen=True)
class OrderProgress:
    """Where an order stands, as its page and its status endpoint show it.

    ``step`` is the last step reached: ``received``, ``paid``, ``confirmation_sent`` or ``failed``;
    ``label`` is a sentence for the shopper (for ``failed``, the reason in their words);
    ``done`` is True once nothing more will happen by itself (the shopper stops waiting);
    ``confirmation_sent`` is True once the order's confirmation (or failure notice) was accepted by
    the SMTP server; ``confirmation`` is the email's full state.
    """

    status: str
    step: str
    label: str
    done: bool
    confirmation_sent: bool
    confirmation: ConfirmationState

    def as_json(self) -> dict:
        """Return the status endpoint's body: status, step, label, done and confirmation_sent."""
        return {
            "status": self.status,
            "step": self.step,
            "label": self.label,
            "done": self.done,
            "confirmation_sent": self.confirmation_sent,
        }

    def steps(self) -> list[dict]:
        """Return ``{"key", "title", "state"}`` per step of ORDER_STEPS, ``state`` being ``done``,
        ``current`` (the step being worked on), ``failed`` or ``todo``."""
        if self.step == "failed":
            return [
                {"key": "received", "title": "Order received", "state": "done"},
                {"key": "failed", "title": "Payment failed", "state": "failed"},
            ]
        reached = [key for key, _ in ORDER_STEPS].index(self.step)
        states = []
        for index, (key, title) in enumerate(ORDER_STEPS):
            if index <= reached:
                state = "done"
            elif index == reached + 1 and not self.done:
                state = "current"
            else:
                state = "todo"
            states.append({"key": key, "title": title, "state": state})
        return states


def order_progress(*, order: Order) -> OrderProgress:
    """Return ``order``'s progress: its status and the state of its confirmation email (one outbox read)."""
    confirmation = order_confirmation(order=order)
    sent = confirmation.state == "sent"
    waiting_for_mail = confirmation.state in ("waiting", "queued")
    if order.status == OrderStatus.FAILED:
        label = f"Payment failed: {order_failure_message(reason=order.failure_reason)}"
        return OrderProgress(order.status, "failed", label, not waiting_for_mail, sent, confirmation)
    if order.status == OrderStatus.PENDING:
        return OrderProgress(order.status, "received", "Order received: taking payment…", False, False, confirmation)
    if sent:
        label = "Paid. Your confirmation email was sent."
        return OrderProgress(order.status, "confirmation_sent", label, True, True, confirmation)
    if confirmation.state == "failed":
        label = "Paid. We could not send your confirmation email."
        return OrderProgress(order.status, "paid", label, True, False, confirmation)
    return OrderProgress(order.status, "paid", "Paid: sending your confirmation email…", False, False, confirmation)
