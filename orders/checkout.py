"""The checkout: one intent of one shopper, bound to their session, completed at most once.

A checkout is a token, the idempotency key of the order it becomes, bound to the cart's contents
and prices its page showed, and kept in the shopper's session: only that session can complete it,
once, and every later submission gets that order, a conflict or a refusal (checkout_complete).
Documented in docs/order-flow.md#3-checkout.
"""

import uuid
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from core.errors import ApplicationError
from orders.cart import cart_clear, cart_contents, cart_lines
from orders.models import Order, Product
from orders.selectors import order_get_by_idempotency_key
from orders.services import LineRequest, PriceChanged, order_create

SESSION_KEY = "checkout"
# The tokens (str) of the session's completed checkouts, oldest first, at most COMPLETED_REMEMBERED.
COMPLETED_KEY = "checkouts_completed"
COMPLETED_REMEMBERED = 20


class CheckoutConflict(ApplicationError):
    """The token is that of a completed checkout whose order has other contents.

    ``order`` (also ``extra["order"]``) is the order the checkout became; nothing was created. The
    views answer 409, as Stripe refuses an idempotency key reused with other parameters
    (https://docs.stripe.com/api/idempotent_requests).
    """

    def __init__(self, order: Order):
        super().__init__(
            f"checkout {order.idempotency_key} was completed as order {order.pk} with other contents",
            extra={"order": order},
        )
        self.order = order


class CheckoutUnknown(ApplicationError):
    """The token is not one this session opened (expired, forged, another session's), or not its open one."""


class CheckoutStale(CheckoutUnknown):
    """The token is the session's open checkout, but the cart (or the lines sent) changed since it was shown."""


# The contents a checkout binds to: ((sku, quantity), …) in cart order.
Contents = tuple[tuple[str, int], ...]
# The unit prices the checkout page showed: ((sku, minor units), …).
Prices = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Checkout:
    """A shopper's checkout: its ``token``, the cart ``lines`` ((sku, quantity), …) it was opened
    with and the unit ``prices`` ((sku, minor units), …) its page showed.

    Stored in the session (SESSION_KEY); completed once an order has ``token`` as its
    ``idempotency_key``. Modelled on Stripe Checkout Sessions and Saleor's checkout
    (https://docs.stripe.com/api/checkout/sessions).
    """

    token: uuid.UUID
    lines: Contents = ()
    prices: Prices = ()


def checkout_start(*, session: SessionBase, lines: Contents = (), prices: Prices = ()) -> Checkout:
    """Open a new checkout in ``session`` (replacing the one there) for the cart contents ``lines``
    at the unit ``prices`` ((sku, minor units), …) the checkout page shows.

    Return the new checkout.
    """
    lines = tuple((sku, int(quantity)) for sku, quantity in lines)
    checkout = Checkout(token=uuid.uuid4(), lines=lines, prices=tuple((sku, int(price)) for sku, price in prices))
    session[SESSION_KEY] = {
        "token": str(checkout.token),
        "lines": [list(line) for line in checkout.lines],
        "prices": [list(price) for price in checkout.prices],
    }
    return checkout


def checkout_current(*, session: SessionBase) -> Checkout | None:
    """Return the checkout stored in ``session`` (open or completed), or None when there is none."""
    stored = session.get(SESSION_KEY)
    try:
        lines = tuple((str(sku), int(quantity)) for sku, quantity in stored.get("lines", ()))
        prices = tuple((str(sku), int(price)) for sku, price in stored.get("prices", ()))
        return Checkout(token=uuid.UUID(stored["token"]), lines=lines, prices=prices)
    except (AttributeError, TypeError, KeyError, ValueError):
        return None


def checkout_for_cart(*, session: SessionBase) -> Checkout:
    """Return the checkout for the cart as it is now: the session's open one when it was opened
    with these contents at these prices, else a new one (the cart or a price changed, or the
    current one was placed)."""
    cart = cart_lines(session=session)  # one read gives both what is bought and at what price
    contents = tuple((line.product.sku, line.quantity) for line in cart)
    prices = tuple((line.product.sku, line.product.price) for line in cart)
    current = checkout_current(session=session)
    if (
        current is not None
        and (current.lines, current.prices) == (contents, prices)
        and checkout_order(token=current.token) is None
    ):
        return current
    return checkout_start(session=session, lines=contents, prices=prices)


def checkout_order(*, token: uuid.UUID) -> Order | None:
    """Return the order that the checkout of ``token`` became, or None while it is open."""
    return order_get_by_idempotency_key(key=token)


def checkout_complete(
    *, session: SessionBase, token: uuid.UUID, email: str, payment_method: str, lines: list[LineRequest]
) -> tuple[Order, bool]:
    """Place the order of the checkout ``token``; return ``(order, created)``.

    ``token`` counts only when this session opened it: its current checkout, or one of the last
    COMPLETED_REMEMBERED it completed. Then:

    - a completed checkout, same contents (a double click, a replayed POST, Back then *Place
      order*, also after the session started another checkout): that order, ``created`` False;
    - a completed checkout, other ``email``, ``payment_method`` or ``lines``: raise
      CheckoutConflict carrying that order; nothing is created;
    - the session's open checkout: the order is created (``order_create``; two concurrent
      submissions still make one order, the second gets the first's) with the lines the
      checkout was opened with, the session remembers the token and the cart is emptied. When
      ``lines`` or the cart are no longer what the checkout was opened with, or a price is no
      longer the one its page showed, raise CheckoutStale and create nothing.

    Any other token, including another session's completed checkout, raises CheckoutUnknown
    and reveals nothing of an order; nothing is created. Raise what ``order_create`` raises for
    lines it refuses (OrderRefused, Product.DoesNotExist).
    """
    current = checkout_current(session=session)
    is_current = current is not None and current.token == token
    if not is_current and str(token) not in _completed_tokens(session):
        raise CheckoutUnknown(f"checkout {token} was not opened in this session")
    order = checkout_order(token=token)
    if order is None:
        if not is_current:  # remembered but without an order: only the open checkout may create one
            raise CheckoutUnknown(f"checkout {token} is not open in this session")
        ids = _product_ids(current.lines)
        sent = sorted((line.product_id, line.quantity) for line in lines)
        opened = sorted((ids[sku], quantity) for sku, quantity in current.lines if sku in ids)
        if sent != opened or cart_contents(session=session) != current.lines:
            raise CheckoutStale(f"checkout {token} was opened for other cart contents")
        # Charged at the prices the page showed, or not at all (PriceChanged: a stale page).
        shown = {ids[sku]: price for sku, price in current.prices if sku in ids}
        priced = [LineRequest(line.product_id, line.quantity, shown.get(line.product_id)) for line in lines]
        try:
            order, created = order_create(
                email=email, lines=priced, idempotency_key=token, payment_method=payment_method
            )
        except PriceChanged:
            raise CheckoutStale(f"checkout {token} was opened at other prices") from None
        _remember_completed(session, token)
        if created:
            cart_clear(session=session, placed=current.lines)
            return order, True
    if not _same_contents(order, email=email, payment_method=payment_method, lines=lines):
        raise CheckoutConflict(order)
    if is_current:
        # A duplicate (double click) whose first request has not emptied the cart yet, or never
        # will (its process died): the order is placed, so its lines leave the cart, once.
        cart_clear(session=session, placed=current.lines, if_unchanged=True)
    return order, False


def _product_ids(contents: Contents) -> dict[str, int]:
    """Return ``{sku: product id}`` of the SKUs of ``contents`` (unknown SKUs are left out)."""
    return dict(Product.objects.filter(sku__in=[sku for sku, _ in contents]).values_list("sku", "pk"))


def _completed_tokens(session: SessionBase) -> list[str]:
    stored = session.get(COMPLETED_KEY)
    return [token for token in stored if isinstance(token, str)] if isinstance(stored, list) else []


def _remember_completed(session: SessionBase, token: uuid.UUID) -> None:
    """Add ``token`` to the session's completed checkouts, keeping the last COMPLETED_REMEMBERED."""
    tokens = [known for known in _completed_tokens(session) if known != str(token)] + [str(token)]
    session[COMPLETED_KEY] = tokens[-COMPLETED_REMEMBERED:]


def _same_contents(order: Order, *, email: str, payment_method: str, lines: list[LineRequest]) -> bool:
    ordered = sorted(order.lines.values_list("product_id", "quantity"))
    requested = sorted((line.product_id, line.quantity) for line in lines)
    return order.email == email and order.payment_method == payment_method and ordered == requested


def checkout_sessions_clear_expired() -> None:
    """Delete expired sessions, and with them their checkouts (a periodic job, settings.PERIODIC_JOBS).

    Every shopper who opens a checkout gets a session row; Django never deletes expired ones by
    itself (https://docs.djangoproject.com/en/5.2/topics/http/sessions/#clearing-the-session-store).
    orders.sessions.SessionStore deletes them in batches of settings.CLEANUP_BATCH_SIZE.
    """
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
