"""Fixtures for process-level tests: the formation's processes, a Redis server a test may restart."""

import signal
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest
from django.db import connection, connections

from embedded.servers import port_open, redis_server_command
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Charge, Order, Product, SandboxCharge
from orders.services import LineRequest, order_create
from tests.procfile import Process, process_env
from tests.support import free_port, wait_until

# Fast timings so recoveries happen within a test's deadlines (seconds).
FAST = {
    "ORDER_SWEEP_INTERVAL": "1",
    "ORDER_STUCK_AFTER": "2",
    "MAILER_POLL_INTERVAL": "0.2",
    "MAILER_LEASE_SECONDS": "12",
    "EMAIL_TIMEOUT": "2",
    "MAILER_HEARTBEAT_SECONDS": "1",
    "STARTUP_RETRY_SECONDS": "2",
    "WEB_CONCURRENCY": "1",
    "WEB_GRACEFUL_TIMEOUT": "20",
}


class Formation:
    """Starts processes of the Procfile's types with one shared environment; stops them all at the end."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.processes: list[Process] = []

    def start(self, kind: str, *, wait: bool = True, command: str | None = None, **env: str) -> Process:
        """Start one process of ``kind``; with ``wait``, return once it is ready (Process.wait_ready)."""
        process = Process(kind, {**self.env, **env}, command=command)
        self.processes.append(process)
        if wait:
            process.wait_ready(15)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.close()


@pytest.fixture
def formation_env(smtp):
    """The environment of the processes under test: test database, Redis, SMTP, fast timings."""
    return process_env(EMAIL_URL=smtp.url, PORT=str(free_port()), **FAST)


@pytest.fixture
def formation(formation_env):
    running = Formation(formation_env)
    yield running
    running.close()


class RedisServer:
    """A real redis-server (the embedded one, see embedded.servers) that a test may stop and restart."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?socket_connect_timeout=1"

    def start(self) -> None:
        self.process = subprocess.Popen(
            redis_server_command(self.port, self.directory, appendonly=True),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        wait_until(lambda: port_open(self.port), deadline=10, message="redis-server to listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path, settings, formation_env):
    """A Redis server of this test's own (so it can be restarted), used by the test and its processes."""
    server = RedisServer(tmp_path)
    server.start()
    settings.RQ_QUEUES = {"default": {**settings.RQ_QUEUES["default"], "URL": server.url}}
    formation_env["REDIS_URL"] = server.url
    yield server
    server.stop()


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
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'formation'"
            " AND NOT (pid = ANY(%s))",
            [own],
        )
        return [row[0] for row in cursor.fetchall()]


def assert_exactly_once(orders, smtp=None, *, smtp_once: bool = True) -> None:
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


def place_order(email: str = "shopper@example.com"):
    """Create a pending order of one mug through the checkout service (enqueued after commit)."""
    product, _ = Product.objects.get_or_create(sku="procfile-mug", defaults={"name": "Procfile mug", "price": 1200})
    order, _ = order_create(email=email, lines=[LineRequest(product.pk, 1)], idempotency_key=uuid.uuid4())
    return order


def order_status(order) -> str:
    """Return the order's status as stored now."""
    return Order.objects.get(pk=order.pk).status
