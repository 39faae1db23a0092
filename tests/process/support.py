"""Helpers for process-level tests: the processes a worker forks, the formation's database
sessions, the crash invariants, an order's stored status. Orders come from tests/factories.py."""

from collections.abc import Iterable

import psutil
from django.db import connection, connections

from embedded.harness import Process
from embedded.polling import wait_until
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Charge, Order, SandboxCharge
from tests.support.smtp import RecordingSMTP


def work_horse(worker: Process) -> psutil.Process:
    """Return the work horse (RQ's forked child running a job) of a running worker.

    A worker runs one job at a time: call it while the job of interest is known to run.
    """

    def horse():
        children = psutil.Process(worker.pid).children()
        return children[0] if children else None

    return wait_until(horse, deadline=15, message="the worker's work horse")


def app_backends() -> list[int]:
    """Return the PostgreSQL backend pids of the formation's processes (not this test's own)."""
    own = []
    for alias in ("default", "gateway"):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            own.append(cursor.fetchone()[0])
    with connection.cursor() as cursor:
        cursor.execute(
            # Each process names its type and release: formation/<process type>/<release>.
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'formation/%%' AND NOT (pid = ANY(%s))",
            [own],
        )
        return [row[0] for row in cursor.fetchall()]


def assert_exactly_once(orders: Iterable[Order], smtp: RecordingSMTP | None = None, *, smtp_once: bool = True) -> None:
    """Assert the crash invariants: every order paid (or failed with a reason), one gateway charge
    per order, one Charge row per paid order, one confirmation recorded as sent per order, and
    (with ``smtp``) each confirmation's Message-ID received once (at least once if not ``smtp_once``)."""
    for order in orders:
        order = Order.objects.get(pk=order.pk)
        assert order.status in ("paid", "failed"), order
        assert order.status == "paid" or order.failure_reason
        assert SandboxCharge.objects.filter(idempotency_key=str(order.idempotency_key)).count() == 1
        assert Charge.objects.filter(order=order).count() == (1 if order.status == "paid" else 0)
        sent = OutboxMessage.objects.filter(key=order.confirmation_key, status=OutboxStatus.SENT)
        # An SMTP server's 250 comes a moment before the mailer records the message as sent.
        wait_until(sent.exists, deadline=15, message=f"the confirmation of {order.pk} to be recorded as sent")
        assert sent.count() == 1, f"confirmation of {order.pk} not sent exactly once"
        if smtp is not None:
            received = smtp.message_ids().count(sent.get().message_id)
            assert received == 1 if smtp_once else received >= 1, f"{order.pk}: received {received} times"


def order_status(order: Order) -> str:
    """Return the order's status as stored now."""
    return Order.objects.get(pk=order.pk).status
