"""The ``address`` template filter: ``{{ order.email|address }}`` shows an address as the shopper typed it."""

from django import template

from mailer.validators import address_for_display

register = template.Library()


@register.filter
def address(value: str) -> str:
    """Return ``value`` with its punycode domain labels in Unicode (mailer.validators.address_for_display)."""
    return address_for_display(value)
