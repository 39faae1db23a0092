"""Model factories for tests: plain functions that return a saved row."""

from orders.models import DEFAULT_STOCK, Product


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
