from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class OrdersConfig(AppConfig):
    # The app's own config: this module also holds ShopAdminConfig.
    default = True
    name = "orders"
    verbose_name = "Orders"

    def ready(self):
        from orders import metrics  # noqa: F401 - registers its collector (core.metrics.collector_register)


class ShopAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the shop's site (orders.admin_site.ShopAdminSite) as ``admin.site``."""

    # AdminConfig is its module's default; this subclass is not the orders app's.
    default = False
    default_site = "orders.admin_site.ShopAdminSite"
