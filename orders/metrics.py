"""The orders by status gauge that web's metrics serve, registered in core's collector registry (core.metrics)."""

import logging
from collections.abc import Iterable

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.metrics import collector_register
from core.preflight import first_line
from orders.models import Order, OrderStatus
from orders.selectors import orders_payment_unsettled

logger = logging.getLogger(__name__)


@collector_register("web")
class OrdersCollector(Collector):
    """``formation_orders{status}``: orders by status, one ``GROUP BY`` (index-only on
    ``order_status_created``) at each scrape; every status appears, 0 when none."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = dict.fromkeys(OrderStatus.values, 0)
        try:
            counts.update(Order.objects.order_by().values_list("status").annotate(Count("pk")))
        except DatabaseError as exc:
            # The other metrics of the scrape still count; the gap in this one says why.
            logger.warning("metrics: orders by status not read, database unavailable (%s)", first_line(exc))
            return
        family = GaugeMetricFamily("formation_orders", "Orders by status, read at scrape time.", labels=["status"])
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family


@collector_register("web")
class UnsettledPaymentsCollector(Collector):
    """``formation_orders_payment_unsettled``: pending orders whose payment call had no answer
    and that are older than settings.PAYMENT_UNSETTLED_AFTER seconds
    (orders.selectors.orders_payment_unsettled), counted at each scrape; alert when above 0.
    The count reads the few pending orders through ``order_status_created``."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            count = orders_payment_unsettled().count()
        except DatabaseError as exc:
            logger.warning("metrics: unsettled payments not counted, database unavailable (%s)", first_line(exc))
            return
        yield GaugeMetricFamily(
            "formation_orders_payment_unsettled",
            "Pending orders whose payment call had no answer, older than PAYMENT_UNSETTLED_AFTER.",
            value=count,
        )
