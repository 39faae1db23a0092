"""The outbox backlog gauge that mailer's metrics serve, registered in core's collector registry (core.metrics)."""

import logging
from collections.abc import Iterable

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.metrics import collector_register
from core.preflight import first_line
from mailer.models import OutboxMessage, OutboxStatus

logger = logging.getLogger(__name__)


@collector_register("mailer")
class OutboxCollector(Collector):
    """``formation_outbox_backlog{status}``: outbox messages not sent, by status (pending,
    sending, failed), one ``GROUP BY`` at each scrape; every status appears, 0 when none."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = dict.fromkeys([status for status in OutboxStatus.values if status != OutboxStatus.SENT], 0)
        try:
            rows = (
                OutboxMessage.objects.order_by()
                .exclude(status=OutboxStatus.SENT)
                .values_list("status")
                .annotate(Count("pk"))
            )
            counts.update(rows)
        except DatabaseError as exc:
            logger.warning("metrics: outbox backlog not read, database unavailable (%s)", first_line(exc))
            return
        family = GaugeMetricFamily(
            "formation_outbox_backlog", "Outbox messages not sent, by status, read at scrape time.", labels=["status"]
        )
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family
