"""The ``money`` template filter: ``{{ minor|money:currency }}`` shows minor units as the shop charges them."""

from django import template

from orders.money import format_money

register = template.Library()


@register.filter
def money(minor: int, currency: str) -> str:
    """Return ``minor`` units of ``currency`` formatted by ``orders.money.format_money`` ("€12.00", "¥500")."""
    return format_money(minor, currency)
