"""What every shop page's template gets (settings.TEMPLATES' context_processors)."""

import logging

from django.db import DatabaseError
from django.http import HttpRequest

from orders.cart import cart_count

logger = logging.getLogger(__name__)


def cart(request: HttpRequest) -> dict:
    """Return ``cart_count``: a callable the template calls once (base.html's header), giving the
    number of units in the shopper's cart (orders.cart.cart_count), so a page that does not show
    it (the admin's) reads nothing. 0 without a session (an answer given before the session
    middleware ran) or when the session or the catalogue cannot be read (a 404 page while
    PostgreSQL is away still renders)."""

    def count() -> int:
        session = getattr(request, "session", None)  # none on a page answered before SessionMiddleware ran
        if session is None:
            return 0
        try:
            return cart_count(session=session)
        except DatabaseError as exc:
            logger.warning("cart count unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return 0

    return {"cart_count": count}
