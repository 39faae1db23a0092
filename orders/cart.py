"""The shopper's cart: products and quantities kept in their session until the checkout places them.

The session (database-backed, so every web process sees it) holds ``[[sku, quantity], …]`` in
the order the products were added; prices are never stored there, they are read from the
catalogue each time. A cart holds at most MAX_LINES products, each 1–MAX_LINE_QUANTITY times,
all in one currency (an order has one currency). Services change the cart and raise CartRefused
with a sentence for the shopper; selectors read it. Stock is checked when a product is added or
its quantity raised, as a courtesy: the order takes the stock (orders.services.order_stock_take).
"""

from dataclasses import dataclass

from django.contrib.sessions.backends.base import SessionBase

from core.errors import ApplicationError
from orders.models import MAX_LINE_QUANTITY, MAX_LINES, Product
from orders.money import SUPPORTED_CURRENCIES, format_money

SESSION_KEY = "cart"
# What the shopper last saw of each line (cart_notices): {sku: [name, price, currency]}.
SEEN_KEY = "cart_seen"


class CartRefused(ApplicationError):
    """A change the cart does not take; ``message`` is a sentence for the shopper."""


@dataclass(frozen=True)
class CartLine:
    """One line of the cart: an active ``product``, a ``quantity`` and its ``amount`` (minor units)."""

    product: Product
    quantity: int

    @property
    def amount(self) -> int:
        """Return quantity times the product's current price, in minor units."""
        return self.quantity * self.product.price


def _pairs(stored) -> list[tuple[str, int]]:
    """Return the ``(sku, quantity)`` pairs of a stored cart, skipping anything malformed."""
    if not isinstance(stored, list):
        return []
    pairs = []
    for entry in stored:
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], int):
            pairs.append((entry[0], entry[1]))
    return pairs


def _stored(session: SessionBase) -> list[tuple[str, int]]:
    """Return the session's ``(sku, quantity)`` pairs, skipping anything malformed."""
    return _pairs(session.get(SESSION_KEY))


def _change(session: SessionBase, change) -> None:
    """Apply ``change(pairs) -> pairs`` to the cart as stored now, under the session row's lock.

    Two overlapping requests of one shopper both change the cart: neither change is lost
    (orders.sessions). What ``change`` raises leaves the cart as it was.
    """

    def stored_change(stored):
        pairs = change(_pairs(stored))
        return [[sku, quantity] for sku, quantity in pairs] if pairs else None

    session.locked_update(SESSION_KEY, stored_change)


def _lines_of(pairs: list[tuple[str, int]]) -> list[CartLine]:
    products = Product.objects.filter(is_active=True).in_bulk([sku for sku, _ in pairs], field_name="sku")
    return [CartLine(product=products[sku], quantity=quantity) for sku, quantity in pairs if sku in products]


def cart_lines(*, session: SessionBase) -> list[CartLine]:
    """Return the cart's lines in the order they were added, for products that are still on sale."""
    return _lines_of(_stored(session))


def cart_unavailable(*, session: SessionBase) -> int:
    """Return how many products the cart keeps that are not on sale now (they count towards MAX_LINES)."""
    return len(_stored(session)) - len(cart_lines(session=session))


def cart_contents(*, session: SessionBase) -> tuple[tuple[str, int], ...]:
    """Return the cart as ``((sku, quantity), …)``: what a checkout binds to (orders.checkout)."""
    return tuple((line.product.sku, line.quantity) for line in cart_lines(session=session))


def cart_total(*, lines: list[CartLine]) -> tuple[int, str | None]:
    """Return ``(total in minor units, currency)`` of ``lines``; the currency is None for no lines."""
    return sum(line.amount for line in lines), (lines[0].product.currency if lines else None)


def _check_stock(product: Product, quantity: int) -> None:
    if quantity > product.stock or product.stock == 0:
        raise CartRefused(product.shortage(product.stock))


def cart_add(*, session: SessionBase, product: Product, quantity: int = 1) -> int:
    """Add ``quantity`` (1–MAX_LINE_QUANTITY) of an active ``product``; return the line's new quantity.

    Raise CartRefused when the line would exceed MAX_LINE_QUANTITY or the stock, when the cart
    holds MAX_LINES other products already (also those not on sale now: they may come back),
    or when the product's currency is not the cart's.
    """
    added = []

    def change(pairs):
        current = dict(pairs).get(product.sku, 0)
        new = current + quantity
        if new > MAX_LINE_QUANTITY:
            raise CartRefused(f"You can order at most {MAX_LINE_QUANTITY} of {product.name}.")
        if not current and len(pairs) >= MAX_LINES:
            unavailable = len(pairs) - len(_lines_of(pairs))
            hidden = f", {unavailable} of them not on sale at the moment" if unavailable else ""
            raise CartRefused(
                f"Your cart holds at most {MAX_LINES} different products{hidden}: place this order first."
            )
        lines = _lines_of(pairs)
        if lines and lines[0].product.currency != product.currency:
            raise CartRefused(
                f"{product.name} is priced in {product.currency} and your cart in {lines[0].product.currency}: "
                "order it separately."
            )
        _check_stock(product, new)
        added.append(new)
        if current:
            return [(sku, new if sku == product.sku else q) for sku, q in pairs]
        return [*pairs, (product.sku, new)]

    _change(session, change)
    return added[-1]


def cart_set_quantity(*, session: SessionBase, product: Product, quantity: int) -> None:
    """Set the cart line of ``product`` to ``quantity`` (1–MAX_LINE_QUANTITY); 0 removes it.

    Raise CartRefused when the product is not in the cart or the stock is smaller.
    """

    def change(pairs):
        if product.sku not in dict(pairs):
            raise CartRefused(f"{product.name} is not in your cart any more.")
        if quantity == 0:
            return [(sku, q) for sku, q in pairs if sku != product.sku]
        _check_stock(product, quantity)
        return [(sku, quantity if sku == product.sku else q) for sku, q in pairs]

    _change(session, change)


def cart_remove(*, session: SessionBase, product: Product) -> None:
    """Remove the line of ``product`` from the cart; removing what is not there does nothing."""
    _change(session, lambda pairs: [(sku, q) for sku, q in pairs if sku != product.sku])


def cart_clear(
    *, session: SessionBase, placed: tuple[tuple[str, int], ...] | None = None, if_unchanged: bool = False
) -> None:
    """Empty the cart of what its order took.

    ``placed`` (``((sku, quantity), …)``, as cart_contents) is what the order took: that and
    the products not on sale (the shopper ordered without them) leave the cart, so a product
    added while the order was being placed stays; None empties the cart. With ``if_unchanged``,
    the cart is left alone unless its lines on sale are still exactly ``placed``.
    """

    def change(pairs):
        if placed is None:
            return []
        on_sale = tuple((line.product.sku, line.quantity) for line in _lines_of(pairs))
        if if_unchanged and on_sale != tuple(placed):
            return pairs
        taken = dict(placed)
        left = [(sku, q - taken.get(sku, 0)) for sku, q in on_sale]
        return [(sku, q) for sku, q in left if q > 0]

    _change(session, change)


def cart_count(*, session: SessionBase) -> int:
    """Return how many units the cart holds of products on sale (the header's count); 0, with no
    query, for a session without a cart."""
    if not _stored(session):
        return 0
    return sum(line.quantity for line in cart_lines(session=session))


def cart_notices(*, session: SessionBase, lines: list[CartLine]) -> list[str]:
    """Return a sentence for each line of the cart that changed since the shopper last saw it
    (on the cart or the checkout page), then remember ``lines`` (the cart as shown now) as seen.

    - a product taken off sale that the cart still holds: it is left out of the order (said once);
    - a price (or currency) that changed: the new price and the one seen;
    - a stock below the line's quantity, at every showing while it lasts (the order would be
      refused): how many are left, or sold out.

    Lines the shopper removed or added themselves say nothing. Writes the session (SEEN_KEY)
    only when what is shown differs from what was seen.
    """
    seen = session.get(SEEN_KEY)
    seen = seen if isinstance(seen, dict) else {}
    shown = {line.product.sku: line for line in lines}
    notices = []
    for sku, _ in _stored(session):
        before = seen.get(sku)
        if sku not in shown:
            if isinstance(before, list) and before:
                notices.append(f"{before[0]} is not on sale any more: it is left out of your order.")
            continue
        product = shown[sku].product
        if isinstance(before, list) and len(before) == 3 and before[1:] != [product.price, product.currency]:
            known = isinstance(before[1], int) and before[2] in SUPPORTED_CURRENCIES
            was = format_money(before[1], before[2]) if known else "another price"
            now = format_money(product.price, product.currency)
            notices.append(f"The price of {product.name} is now {now} (it was {was}).")
        if shown[sku].quantity > product.stock:
            if product.stock == 0:
                notices.append(f"{product.name} is sold out: remove it to place your order.")
            else:
                notices.append(f"{product.shortage(product.stock)} Lower the quantity to place your order.")
    # A product off sale is told once: the page has no line for it (the cart keeps it, hidden, in
    # case it comes back on sale).
    remembered = {sku: [line.product.name, line.product.price, line.product.currency] for sku, line in shown.items()}
    if remembered != seen:
        session[SEEN_KEY] = remembered
    return notices
