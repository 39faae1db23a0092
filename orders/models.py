"""Catalogue, orders, their charges and the sandbox gateway's own ledger.

Amounts are integers in minor units of their currency, with the currency's ISO 4217 exponent
(cents for EUR, whole yen for JPY, fils for KWD), as payment providers take them
(https://docs.stripe.com/currencies#zero-decimal); ``orders.money`` converts and formats them.
Currencies are the ISO 4217 codes of ``orders.money.SUPPORTED_CURRENCIES``. Key invariants are
database constraints.
"""

import uuid

from django.db import models
from django.db.models import Func, Q
from django.db.models.functions import Now
from django.urls import reverse

from mailer.validators import validate_deliverable_address
from orders.money import CURRENCY_CHOICES, SUPPORTED_CURRENCIES

MINOR_UNITS_HELP = "Minor units of the currency (ISO 4217 exponent)."
# The most of one product an order line may hold (the checkout form and a database constraint).
MAX_LINE_QUANTITY = 99
# The most lines (products) one cart, and so one order, may hold.
MAX_LINES = 20
# What a product is created with when nobody says otherwise (existing rows got it in migration 0005).
DEFAULT_STOCK = 100
# At or below this many units a product is "low": the storefront says "Only N left" (_buy.html)
# and the admin's summary counts it among the products to restock.
LOW_STOCK = 5


def order_job_id(order_id: uuid.UUID | str) -> str:
    """Return the RQ job id of the processing job of the order ``order_id`` (a UUID or its string).

    Letters, digits and '-' only, as rq >= 2.8 requires. Raise ValueError for a malformed UUID string.
    """
    return f"order-process-{uuid.UUID(str(order_id)).hex}"


class Product(models.Model):
    """A product in the catalogue; ``price`` is in minor units of ``currency`` (a supported ISO 4217 code)."""

    sku = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    price = models.PositiveIntegerField(help_text=MINOR_UNITS_HELP)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default="EUR")
    is_active = models.BooleanField(default=True)
    # Units on hand: taken when an order is placed, given back when its payment is declined
    # (orders.services.order_stock_take / order_stock_return). PostgreSQL checks it is >= 0.
    stock = models.PositiveIntegerField(default=DEFAULT_STOCK, help_text="Units on hand.")
    # A picture from the static files (served under its hashed name, cached for ten years) and
    # its text for those who cannot see it. Database defaults: the previous release inserts
    # products without these columns.
    image = models.CharField(
        max_length=200, blank=True, default="", db_default="", help_text="A static file under products/, or empty."
    )
    image_alt = models.CharField(
        max_length=200, blank=True, default="", db_default="", help_text="What the picture shows, in words."
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gt=0), name="product_price_positive"),
            models.CheckConstraint(condition=Q(currency__in=SUPPORTED_CURRENCIES), name="product_currency_supported"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"

    def shortage(self, left: int) -> str:
        """Return the sentence telling a shopper that only ``left`` units (int, >= 0) of this
        product remain: "Procfile mug is sold out." or "Only 2 left of Procfile mug.". The name
        comes after the count, never as its noun: a name cannot be put in the plural."""
        return f"{self.name} is sold out." if left == 0 else f"Only {left} left of {self.name}."


# The sequence that numbers orders (orders/migrations/0010_order_number), and the number's prefix:
# "F-1001" is what a shopper reads on the order page and in the email, and staff search for.
ORDER_NUMBER_SEQUENCE = "orders_order_number_seq"
ORDER_NUMBER_PREFIX = "F-"


class NextVal(Func):
    """``nextval('<sequence>')``: the next value of a PostgreSQL sequence, for a ``db_default``
    (https://www.postgresql.org/docs/current/functions-sequence.html)."""

    template = "nextval('%(sequence)s')"
    arity = 0

    def __init__(self, sequence: str, **extra):
        super().__init__(sequence=sequence, **extra)
        self.sequence = sequence

    def deconstruct(self):
        return "orders.models.NextVal", (self.sequence,), {}

    def __eq__(self, other):
        return isinstance(other, NextVal) and other.sequence == self.sequence

    def __hash__(self):
        return hash(("nextval", self.sequence))


class OrderStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"


# Allowed next states per state (django-oscar's pipeline); paid is final. failed -> pending is
# the staff's "re-run processing" (orders.operations.order_rerun) and nothing else: it is one of
# ORDER_STATUS_BY_STAFF_ONLY, which order_set_status allows only with a named actor.
ORDER_STATUS_PIPELINE: dict[str, frozenset[str]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.FAILED}),
    OrderStatus.PAID: frozenset(),
    OrderStatus.FAILED: frozenset({OrderStatus.PENDING}),
}
ORDER_STATUS_BY_STAFF_ONLY: frozenset[tuple[str, str]] = frozenset({(OrderStatus.FAILED, OrderStatus.PENDING)})


class PaymentMethod(models.TextChoices):
    """Sandbox payment methods, named after Stripe's documented test PaymentMethods."""

    VISA = "pm_card_visa", "Test Visa (succeeds)"
    DECLINED = "pm_card_chargeDeclined", "Test card (declined)"


class Order(models.Model):
    """A shopper's order; its ``idempotency_key`` is the checkout form's one-time token."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    idempotency_key = models.UUIDField(unique=True, editable=False)
    email = models.EmailField(validators=[validate_deliverable_address])
    status = models.CharField(max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default="EUR")
    total = models.PositiveBigIntegerField(help_text=MINOR_UNITS_HELP)
    payment_method = models.CharField(max_length=40, choices=PaymentMethod.choices, default=PaymentMethod.VISA)
    failure_reason = models.TextField(blank=True)
    # A database default too: during a rolling deploy, processes of the previous release insert
    # orders without this column.
    request_id = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        editable=False,
        help_text="The X-Request-ID of the request that placed it; its job and email log it too.",
    )
    # Calls to the payment provider that ended with no answer (orders.payments.PaymentTimeout or the
    # job cut mid-call), and when the sweep may retry it: a per-order backoff, so a provider
    # slower than the job is not asked again at every sweep. Database defaults: processes of the
    # previous release insert orders without these columns.
    payment_timeouts = models.PositiveIntegerField(default=0, db_default=0, editable=False)
    payment_retry_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The database's clock, never the inserting host's: the sweep compares it with its own.
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # The order's short number (shown with ORDER_NUMBER_PREFIX: "F-1001"), from a sequence in the
    # database, so every release's INSERT gets one, the previous release's too. The UUID stays
    # the unguessable key of the order's page; the number is for people (emails, phone, admin).
    number = models.BigIntegerField(
        unique=True, null=True, editable=False, db_default=NextVal(ORDER_NUMBER_SEQUENCE), help_text="Order number."
    )
    # Fulfilment, set by staff (orders.operations.order_ship). A database default for the
    # reference: the previous release inserts orders without it.
    shipped_at = models.DateTimeField(null=True, blank=True, editable=False)
    tracking_reference = models.CharField(max_length=100, blank=True, default="", db_default="", editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="order_status_created")]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=OrderStatus.values), name="order_status_valid"),
            models.CheckConstraint(
                condition=~Q(status=OrderStatus.FAILED) | ~Q(failure_reason=""), name="order_failed_has_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"Order {self.id} ({self.status})"

    def get_absolute_url(self) -> str:
        """Return the path of the shopper's page of this order (``/orders/<uuid>/``)."""
        return reverse("order-detail", kwargs={"order_id": self.pk})

    @property
    def reference(self) -> str:
        """Return the order's number as people read it ("F-1001"); the UUID's first 8 characters
        for an order not numbered yet (one inserted before its release's migration backfilled it)."""
        return f"{ORDER_NUMBER_PREFIX}{self.number}" if self.number is not None else str(self.pk)[:8]

    @property
    def job_id(self) -> str:
        """Return the RQ job id of this order's processing job (see order_job_id)."""
        return order_job_id(self.id)

    @property
    def confirmation_key(self) -> str:
        """Return the outbox key of the email this order's current status sends (mailer.OutboxMessage.key)."""
        return f"order-{self.status}-{self.pk}"


class OrderLine(models.Model):
    """One product and quantity of an order, priced when the order was placed."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveSmallIntegerField()
    unit_price = models.PositiveIntegerField(help_text=MINOR_UNITS_HELP)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["order", "product"], name="orderline_one_per_product"),
            models.CheckConstraint(
                condition=Q(quantity__gte=1, quantity__lte=MAX_LINE_QUANTITY), name="orderline_quantity_1_99"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.product.name}"

    @property
    def amount(self) -> int:
        """Return quantity times unit price, in minor units."""
        return self.quantity * self.unit_price


class OrderStatusChange(models.Model):
    """Audit row written by every status transition and by every staff operation on the order.

    A row whose ``from_status`` equals its ``to_status`` is a note: an operation that changed no
    status (a re-run of a pending order, a resent confirmation). ``actor`` is the staff user's
    username (a copy, not a key: the history outlives the account); empty for the shop's own
    processes. Rows are only ever added: the admin can neither change nor delete them.
    """

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=16, choices=OrderStatus.choices)
    to_status = models.CharField(max_length=16, choices=OrderStatus.choices)
    reason = models.TextField(blank=True)
    actor = models.CharField(max_length=150, blank=True, help_text="The staff user who did it; empty for the shop.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.order_id}: {self.from_status} -> {self.to_status}"


class Charge(models.Model):
    """The shop's record of the gateway charge that paid an order (at most one per order)."""

    order = models.OneToOneField(Order, on_delete=models.PROTECT, related_name="charge")
    gateway_charge_id = models.CharField(max_length=64, unique=True)
    amount = models.PositiveBigIntegerField(help_text=MINOR_UNITS_HELP)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.gateway_charge_id


class SandboxChargeOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    DECLINED = "declined", "Declined"


class SandboxCharge(models.Model):
    """The sandbox payment gateway's own ledger, keyed by idempotency key.

    It stands for the provider's side: written through the ``gateway`` database connection,
    it commits independently of the shop's transaction, as a real provider's charge would.
    Its ``currency`` has no choices: it records what the provider was asked, as a provider's
    ledger would, and the shop's own rows (Order, Charge) are the ones restricted.
    """

    charge_id = models.CharField(max_length=64, unique=True)
    idempotency_key = models.CharField(max_length=255, unique=True)
    amount = models.PositiveBigIntegerField(help_text=MINOR_UNITS_HELP)
    currency = models.CharField(max_length=3)
    payment_method = models.CharField(max_length=40)
    outcome = models.CharField(max_length=16, choices=SandboxChargeOutcome.choices)
    decline_code = models.CharField(max_length=40, blank=True)
    # How many times the provider was asked with this key (the first call and every retry), as a
    # provider's request log would tell; a database default for the previous release's inserts.
    requests = models.PositiveIntegerField(default=1, db_default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.charge_id} ({self.outcome})"


class StaffRequest(models.Model):
    """One request of staff on an order (a note, *Mark shipped*), by the one-time ``token`` its
    form carried: the operation inserts it first, so the same form sent twice (a double click, a
    retried POST) acts once (orders.operations)."""

    token = models.UUIDField(primary_key=True, editable=False)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20)
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    def __str__(self) -> str:
        return f"{self.kind} {self.token}"
