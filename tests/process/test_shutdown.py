"""Graceful shutdown on SIGTERM, sent to the process alone (Kubernetes, docker) or to its whole
process group (honcho, Heroku): each process type finishes what it started and exits 0."""

import asyncio
import http.client
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import django_rq
import psutil
import pytest
import rq

from core.queues import DEFAULT_QUEUE, MAINTENANCE_QUEUE
from embedded.harness import ROOT, Process
from embedded.polling import wait_until
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Order, OrderStatus, SandboxCharge
from processes.worker import Worker
from tests import factories
from tests.process.support import work_horse
from tests.support.databases import ALL_DATABASES

pytestmark = [
    pytest.mark.process,
    pytest.mark.shutdown,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

BOTH = pytest.mark.parametrize("group", [False, True], ids=["process", "group"])


@BOTH
def test_web_finishes_requests_in_flight_and_refuses_new_connections(formation, group):
    web = formation.start("web")
    port = int(web.env["PORT"])
    in_flight = socket.create_connection(("127.0.0.1", port), timeout=10)
    in_flight.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # headers not finished yet
    gunicorn_worker = psutil.Process(web.pid).children()[0]
    wait_until(
        lambda: any(c.laddr.port == port and c.status == "ESTABLISHED" for c in gunicorn_worker.net_connections()),
        deadline=10,
        message="gunicorn's worker to accept the connection",
    )
    web.send_signal(signal.SIGTERM, group=group)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):
            # Refused, or reset: a connect the kernel queued as the listener was being closed.
            return True
        return False

    wait_until(refused, deadline=10, message="new connections to be refused")
    in_flight.sendall(b"Connection: close\r\n\r\n")
    response = in_flight.recv(4096)
    assert response.startswith(b"HTTP/1.1 200 OK"), response
    assert web.wait(deadline=30) == 0


def _refused(port: int) -> bool:
    """Return True when a new connection to ``port`` is refused (or reset: a connect the kernel
    queued as the listener was being closed)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def _response(client: socket.socket) -> bytes:
    """Read what the server sends on ``client`` until it closes the connection, then close ours."""
    chunks = []
    with client:
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _busy_web(formation):
    """Start web with one worker and keep that worker busy reading a request whose headers never
    end; return ``(web, port, the busy connection)``."""
    web = formation.start("web", WEB_CONCURRENCY="1")
    port = int(web.env["PORT"])
    busy = socket.create_connection(("127.0.0.1", port), timeout=10)
    busy.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
    gunicorn_worker = psutil.Process(web.pid).children()[0]
    wait_until(
        lambda: any(c.laddr.port == port and c.status == "ESTABLISHED" for c in gunicorn_worker.net_connections()),
        deadline=10,
        message="gunicorn's worker to accept the connection",
    )
    return web, port, busy


BACKLOGGED = 20


@BOTH
def test_web_serves_every_connection_waiting_in_its_listen_backlog_at_sigterm(formation, group):
    """A rolling restart fails no request: connections the kernel accepted into the listen backlog
    before SIGTERM, while the only worker was busy, each get their response; /ready among them
    says the process is stopping."""
    web, port, busy = _busy_web(formation)
    waiting = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(BACKLOGGED)]
    for client in waiting:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    probe = socket.create_connection(("127.0.0.1", port), timeout=20)
    probe.sendall(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    web.send_signal(signal.SIGTERM, group=group)
    wait_until(lambda: _refused(port), deadline=10, message="new connections to be refused")
    busy.sendall(b"Connection: close\r\n\r\n")
    assert _response(busy).startswith(b"HTTP/1.1 200 OK")
    statuses = [_response(client).split(b"\r\n", 1)[0] for client in waiting]
    assert statuses == [b"HTTP/1.1 200 OK"] * BACKLOGGED
    with probe:
        ready = http.client.HTTPResponse(probe)
        ready.begin()
        assert ready.status == 503
        assert json.loads(ready.read())["status"] == "stopping"
    assert web.wait(deadline=30) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_web_quick_shutdown_does_not_wait_for_requests_in_flight(formation, sig):
    """SIGINT and SIGQUIT are gunicorn's quick shutdown: the process exits at once, without waiting
    for the request in flight (WEB_GRACEFUL_TIMEOUT is 20 s here), which gets no answer of its own."""
    web, port, busy = _busy_web(formation)
    stopped = time.monotonic()
    web.send_signal(sig)
    assert web.wait(deadline=10) == 0
    assert time.monotonic() - stopped < 10
    assert not _response(busy).startswith(b"HTTP/1.1 200")  # cut, or gunicorn's 500 for the interrupted request
    assert _refused(port)


@pytest.mark.parametrize("target", ["process", "group", "every-process"])
def test_worker_warm_shutdown_finishes_the_job_and_takes_no_new_one(formation, target):
    worker = formation.start("worker", PAYMENT_SANDBOX_LATENCY_MS="2000")
    first, second = factories.order(), factories.order()
    work_horse(worker)
    wait_until(lambda: SandboxCharge.objects.exists(), deadline=15, message="the first charge")
    if target == "every-process":
        worker.signal_every_process(signal.SIGTERM)
    else:
        worker.send_signal(signal.SIGTERM, group=target == "group")
    assert worker.wait(deadline=30) == 0
    assert Order.objects.get(pk=first.pk).status == OrderStatus.PAID
    assert Order.objects.get(pk=second.pk).status == OrderStatus.PENDING
    assert django_rq.get_queue(DEFAULT_QUEUE).get_job_ids() == [second.job_id]
    assert "warm shut down requested" in worker.output()


def test_worker_second_signal_is_a_cold_shutdown(formation):
    worker = formation.start("worker", PAYMENT_SANDBOX_LATENCY_MS="20000")
    order = factories.order()
    horse = work_horse(worker)
    wait_until(lambda: SandboxCharge.objects.exists(), deadline=15, message="the charge")

    def stopped():
        # RQ ignores a repeat within 1 s of the first signal (rq/worker/base.py): keep pressing.
        worker.send_signal(signal.SIGTERM)
        return worker.popen.poll() is not None

    wait_until(stopped, deadline=10, interval=0.5, message="cold shutdown")
    assert not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE
    assert "cold shut down" in worker.output()
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PENDING  # the sweep's job now


@BOTH
def test_scheduler_releases_its_lock_and_a_standby_takes_over(formation, group):
    first = formation.start("scheduler", command="exec python manage.py rqscheduler --interval 1")
    standby = formation.start("scheduler", command="exec python manage.py rqscheduler --interval 1")
    first.send_signal(signal.SIGTERM, group=group)
    assert first.wait(deadline=15) == 0
    connection = django_rq.get_connection(DEFAULT_QUEUE)
    connection.delete(f"rq:queue:{MAINTENANCE_QUEUE}")
    wait_until(
        lambda: b"orders-sweep-pending" in connection.lrange(f"rq:queue:{MAINTENANCE_QUEUE}", 0, -1),
        deadline=10,
        message="the standby scheduler to enqueue the sweep",
    )
    assert standby.popen.poll() is None


@BOTH
def test_mailer_finishes_the_message_being_sent_and_leaves_the_rest(formation, smtp, group):
    sending = threading.Event()

    async def slow_data(server, session, envelope):
        sending.set()
        await asyncio.sleep(1.5)
        return await type(smtp).handle_DATA(smtp, server, session, envelope)

    smtp.handle_DATA = slow_data
    for i in range(3):
        factories.outbox_message(to=f"u{i}@example.com")
    mailer = formation.start("mailer")
    assert sending.wait(timeout=15)
    mailer.send_signal(signal.SIGTERM, group=group)
    assert mailer.wait(deadline=30) == 0
    assert len(smtp.messages) == 1
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 1
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 2


def test_dev_runner_process_manager_waits_for_the_job_in_progress(formation_env, tmp_path):
    """The runner's stop signal reaches its process manager alone (embedded/manager.py); it waits
    for a 7 s job to finish and exits 0 when every process stopped gracefully."""
    order = factories.order()
    env = {**formation_env, "PAYMENT_SANDBOX_LATENCY_MS": "7000"}
    endpoints = f"--endpoint ipc://{tmp_path}/control.sock --pubsub ipc://{tmp_path}/events.sock"
    manager = Process("manager", env, command=f"exec python -m embedded.manager {endpoints} --logs {tmp_path} worker")
    try:
        wait_until(lambda: SandboxCharge.objects.exists(), deadline=20, message="the charge")
        manager.send_signal(signal.SIGTERM)  # what the runner sends on Ctrl-C
        assert manager.wait(deadline=60) == 0
        assert "worker.1 stopped (rc=0)" in manager.output()
        assert Order.objects.get(pk=order.pk).status == OrderStatus.PAID
    finally:
        manager.close()


@pytest.mark.parametrize("kind", ["worker", "scheduler", "mailer"])
def test_a_stop_at_any_instant_of_the_start_exits_0_promptly(formation, kind):
    """SIGTERM during interpreter start, Django's set-up, imports, the start-up checks or the
    periodic jobs' registration: the process type exits 0 within seconds, never lives on."""
    for delay in (0.05, 0.2, 0.4, 0.7, 1.0, 1.5):
        process = formation.start(kind, wait=False)
        time.sleep(delay)  # the instant of the signal is what this test varies
        process.send_signal(signal.SIGTERM)
        assert process.wait(deadline=15) == 0, (kind, delay, process.output())


def test_a_stop_before_start_ends_the_process_even_inside_a_callback_that_swallows_exceptions():
    """manage.py's early SIGTERM rule holds wherever the signal lands: a SystemExit raised by a signal
    handler inside a weakref (or import-lock) callback is printed as "Exception ignored" and dropped,
    and the process type went on starting (a scheduler outlived its stop under load)."""
    script = (
        "import os, signal, sys, weakref\n"
        "import manage\n"
        "signal.signal(signal.SIGTERM, manage._stop_before_start)\n"
        "class Thing: pass\n"
        "thing = Thing()\n"
        "def callback(ref):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    sum(range(10000))  # the handler runs here, inside the callback\n"
        "ref = weakref.ref(thing, callback)\n"
        "del thing\n"
        "print('still starting', flush=True)\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


class _SignalInsideEmit(logging.StreamHandler):
    """A log handler that sends this process SIGTERM from inside ``emit`` for the first record
    ``when(record)`` accepts: whatever the signal handler raises there, logging swallows."""

    def __init__(self, when):
        super().__init__(io.StringIO())
        self.when, self.record, self.sent = when, None, False

    def emit(self, record):
        self.record = record
        super().emit(record)

    def flush(self):
        if not self.sent and self.when(self.record):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        super().flush()  # the signal handler runs on entering this call, inside emit's try


@pytest.mark.parametrize("line", ["registry clean-up", "right before the pop", "job dequeued"])
def test_worker_stops_when_its_stop_signal_lands_inside_a_log_call(line):
    """RQ's handler raises StopRequested without recording the stop when the worker is idle; in a
    log call, logging swallowed it and the worker listened on until honcho's SIGKILL (CI, on the
    "job dequeued" line). The stop must hold: a dequeued job is finished, nothing more is taken."""
    connection = django_rq.get_connection(DEFAULT_QUEUE)
    queue = rq.Queue("stop-inside-log", connection=connection)
    queue.empty()
    job = queue.enqueue("os.getpid")
    queue.enqueue("os.getpid")  # a second job: nothing more may be taken after the stop
    when = {
        "registry clean-up": lambda record: "cleaning registries" in record.getMessage(),
        "right before the pop": lambda record: "dequeueing jobs" in record.getMessage(),
        "job dequeued": lambda record: record.getMessage().endswith(f"({job.id})"),
    }[line]
    taken = []

    def execute_job(self, job, queue):  # the loop is under test, not the work horse
        taken.append(job.id)

    worker = type("LoopWorker", (Worker,), {"execute_job": execute_job})([queue], connection=connection)
    handler = _SignalInsideEmit(when)
    logging.getLogger("rq.worker").addHandler(handler)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Without the stop, the worker would take every job, then quit after 10 s idle.
        worker.work(logging_level="DEBUG", max_idle_time=10)
    finally:
        logging.getLogger("rq.worker").removeHandler(handler)
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
        queue.empty()
    assert handler.sent, "the signal was never sent"
    assert taken == ([job.id] if line == "job dequeued" else []), "the worker took jobs after its stop"
    assert "idle for" not in handler.stream.getvalue(), "the worker ignored its stop and idled"
