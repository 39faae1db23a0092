from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"

    def ready(self):
        from orders import metrics  # noqa: F401 - registers its collector (core.metrics.collector_register)
