"""Helpers for process-level tests: the processes a worker forks, the formation's database
sessions, the crash invariants, an order's stored status, ``make run`` started in the background.
Orders come from tests/factories.py."""

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

import psutil
from django.db import connection, connections

from embedded.harness import Process, spawn
from embedded.polling import wait_until
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Charge, Order, SandboxCharge
from processes.procfile import formation_types, web_healthy
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


# Seconds: the formation is up within UP_WITHIN of the start; a graceful stop (no job running)
# takes about 3 s, so STOP_WITHIN leaves room while failing well before a test run drags on.
UP_WITHIN = 60
STOP_WITHIN = 30


def ignore_sigint() -> None:
    """What a non-interactive shell does to a background job (``make run &``): SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Launched:
    """``make run`` or the runner, started without a terminal (own session, stdin /dev/null)
    and with SIGINT ignored, its output in a file."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.env = env
        self.formation: list[psutil.Process] = []  # every process seen under it, for clean-up
        self.popen, self.log = spawn(argv, env, log_prefix="formation-runner-", preexec_fn=ignore_sigint)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def runner(self) -> psutil.Process:
        """Return the runner process: this process itself, or make's child running it."""

        def find():
            if self.popen.poll() is not None:
                raise AssertionError(f"exited {self.popen.returncode} first:\n{self.output()}")
            for process in [psutil.Process(self.popen.pid), *psutil.Process(self.popen.pid).children()]:
                if process.cmdline()[-2:] == ["embedded", "run"]:
                    return process
            return None

        return wait_until(find, deadline=10, message="the runner process")

    def wait_until_up(self) -> None:
        """Wait until web answers /health and every process type has started."""

        def up():
            if self.popen.poll() is not None:
                raise AssertionError(f"exited {self.popen.returncode} first:\n{self.output()}")
            output = self.output()
            return web_healthy(self.env["PORT"]) and all(f"{kind}.1 started" in output for kind in formation_types())

        wait_until(up, deadline=UP_WITHIN, interval=0.2, message="web /health and every process type")

    def wait(self, deadline: float = STOP_WITHIN) -> int:
        """Return the exit code; fail (after stopping everything) when it outlives ``deadline``."""
        try:
            return self.popen.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"still running {deadline:g}s after the signal:\n{self.output()}") from None

    def snapshot(self) -> list[psutil.Process]:
        """Return (and remember) every process of the formation running now, this one included."""
        root = psutil.Process(self.popen.pid)
        self.formation = [root, *root.children(recursive=True)]
        return self.formation

    def close(self) -> None:
        """Kill whatever is left of what this test started, by PID: its tree now and every
        process seen in it before (a runner that died leaves the process manager's tree orphaned)."""
        leftovers = []
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.popen.pid)
            leftovers = [*root.children(recursive=True), root]
        for process in [*leftovers, *self.formation]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()  # psutil checks the PID still names the same process
        self.popen.wait(timeout=10)
        self.log.close()


def stop_and_check(launched: Launched, sig: int) -> int:
    """Send ``sig`` to the runner alone; wait for the exit; assert every process of the
    formation is gone and each type stopped gracefully. Return the exit code."""
    runner = launched.runner()
    formation = launched.snapshot()
    os.kill(runner.pid, sig)
    code = launched.wait()
    _, alive = psutil.wait_procs(formation, timeout=10)
    assert not alive, f"still running: {alive}\n{launched.output()}"
    return code
