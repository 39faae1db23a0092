"""Model factories for tests: plain functions, keyword-only, that return a saved row.

Orders and outbox messages are made through the shop's own services (orders.services.order_create,
mailer.services.outbox_message_create), so every invariant those keep holds for a test's rows too:
an order's lines, total and stock taken in one transaction, its processing job enqueued after commit.
"""

import uuid

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser

from mailer.models import OutboxMessage
from mailer.services import outbox_message_create
from orders.models import DEFAULT_STOCK, Order, PaymentMethod, Product
from orders.services import LineRequest, order_create

# The password of every staff_user(), for a test that logs in through the login form.
STAFF_PASSWORD = "pw-123456789"


def product(
    *,
    sku: str = "procfile-mug",
    name: str = "Procfile mug",
    price: int = 1200,
    currency: str = "EUR",
    stock: int = DEFAULT_STOCK,
) -> Product:
    """Return the product ``sku``, created with these fields if it does not exist yet.

    ``price`` is in minor units of ``currency`` (1200 EUR: €12.00). An existing product is
    returned unchanged, so tests and helpers may ask for the shop's mug as often as they like.
    """
    defaults = {"name": name, "price": price, "currency": currency, "stock": stock}
    return Product.objects.get_or_create(sku=sku, defaults=defaults)[0]


_product = product  # order()'s ``product`` argument hides the function


def order(
    *,
    product: Product | None = None,
    quantity: int = 1,
    email: str = "shopper@example.com",
    payment_method: str = PaymentMethod.VISA,
    request_id: str | None = None,
) -> Order:
    """Place a new pending order through the checkout service (orders.services.order_create); return it.

    One line of ``quantity`` units (1–99) of ``product`` (default: the shop's mug, product()) at
    the product's price; paid with ``payment_method`` (a sandbox test card: VISA succeeds,
    DECLINED is declined). Each call has an idempotency key of its own, so each call creates an
    order, and its processing job is enqueued after commit as a checkout's is (a test runs it with
    run_burst_worker or order_process, or a formation's worker picks it up). ``request_id`` as
    order_create takes it (default: the log context's). Raise what order_create raises
    (OrderRefused when the product is not on sale or has too little stock).
    """
    product = product if product is not None else _product()
    placed, created = order_create(
        email=email,
        lines=[LineRequest(product.pk, quantity)],
        idempotency_key=uuid.uuid4(),
        payment_method=payment_method,
        request_id=request_id,
    )
    assert created, "a fresh idempotency key created no order"
    return placed


def staff_user(
    *,
    username: str = "admin",
    email: str | None = None,
    password: str = STAFF_PASSWORD,
    superuser: bool = False,
) -> AbstractUser:
    """Create a staff user who may log in to the admin; return it.

    With ``superuser`` the user has every permission; without, none until the test grants some
    (``user.user_permissions.add(...)``). ``email`` defaults to ``<username>@example.com``; the
    password is ``password`` (STAFF_PASSWORD unless given), for a test that logs in through the form.
    """
    email = email if email is not None else f"{username}@example.com"
    users = get_user_model().objects
    if superuser:
        return users.create_superuser(username, email, password)
    return users.create_user(username, email, password, is_staff=True)


def outbox_message(
    *,
    to: str = "shopper@example.com",
    key: str | None = None,
    subject: str = "s",
    body: str = "b",
) -> OutboxMessage:
    """Queue a message in the outbox through mailer.services.outbox_message_create; return its row.

    ``key`` (the outbox's once-only key) defaults to a new one each call, so each call queues a
    message; with a ``key`` already queued, that row is returned unchanged. The message is pending
    and due now: a mailer (outbox_send_due, or a formation's mailer process) sends it.
    """
    return outbox_message_create(key=key or f"test-{uuid.uuid4().hex}", to=to, subject=subject, body=body)
