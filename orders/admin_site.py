"""The admin site of the shop: the shop's own apps first on the index, under a summary of the day.

Installed through orders.apps.ShopAdminConfig (in INSTALLED_APPS instead of
``django.contrib.admin``), whose ``default_site`` makes this class ``django.contrib.admin.site``
(https://docs.djangoproject.com/en/5.2/ref/contrib/admin/#overriding-the-default-admin-site).
"""

from datetime import datetime, time, timedelta
from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from orders.money import format_money
from orders.selectors import shop_day

# The index's order: the shop, its mail, then the rest (authentication, lockouts, queues) by name.
SHOP_FIRST = ("orders", "mailer")


class ShopAdminSite(admin.AdminSite):
    """Django's AdminSite with the shop's apps first (SHOP_FIRST) and, for staff who may view
    orders, the day's summary above them (orders.selectors.shop_day), each figure a link to the
    list it counts."""

    site_header = site_title = "Formation admin"
    index_title = "Run the shop"

    def get_app_list(self, request, app_label=None) -> list[dict]:
        """Return Django's app list (sorted by name) with SHOP_FIRST's apps moved to the front."""
        apps = super().get_app_list(request, app_label)
        rank = {label: place for place, label in enumerate(SHOP_FIRST)}
        return sorted(apps, key=lambda app: rank.get(app["app_label"], len(rank)))

    def index(self, request, extra_context=None):
        """The index page, with ``summary`` (a list of figures) in its context for staff who may view orders."""
        context = dict(extra_context or {})
        if request.user.has_perm("orders.view_order"):
            context["summary"] = summary_figures(timezone.localdate())
        return super().index(request, extra_context=context)


def summary_figures(day) -> list[dict]:
    """Return the figures of the admin's summary for ``day`` (a date in TIME_ZONE): dicts with
    ``id``, ``label``, ``value`` (text) and ``url`` (the admin list that shows what is counted)."""
    since = timezone.make_aware(datetime.combine(day, time.min))
    figures = shop_day(since=since)
    orders = reverse("admin:orders_order_changelist")
    today = {"created_at__gte": str(since), "created_at__lt": str(since + timedelta(days=1))}

    def orders_url(**params) -> str:
        return f"{orders}?{urlencode(params)}"

    takings = ", ".join(format_money(amount, currency) for amount, currency in figures.takings) or "—"
    return [
        {"id": "summary-placed", "label": "Orders today", "value": figures.placed, "url": orders_url(**today)},
        {
            "id": "summary-takings",
            "label": "Paid today",
            "value": f"{figures.paid} ({takings})",
            "url": orders_url(status__exact="paid", **today),
        },
        {
            "id": "summary-failed",
            "label": "Payments failed today",
            "value": figures.failed,
            "url": orders_url(status__exact="failed", **today),
        },
        {
            "id": "summary-pending",
            "label": "Awaiting payment",
            "value": figures.pending,
            "url": orders_url(status__exact="pending"),
        },
        {
            "id": "summary-unsettled",
            "label": "Unsettled at the provider",
            "value": figures.unsettled,
            "url": orders_url(payment="unsettled"),
        },
        {
            "id": "summary-to-ship",
            "label": "Orders to ship",
            "value": figures.to_ship,
            "url": orders_url(shipping="to-ship"),
        },
        {
            "id": "summary-low-stock",
            "label": "Products low on stock",
            "value": figures.low_stock,
            "url": f"{reverse('admin:orders_product_changelist')}?stock=low",
        },
    ]
