from django import template

register = template.Library()


@register.filter
def money(minor: int, currency: str = "EUR") -> str:
    """Format ``minor`` currency units (two decimals, as EUR) as ``12.34 EUR``."""
    return f"{minor // 100}.{minor % 100:02d} {currency}"
