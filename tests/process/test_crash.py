"""Crash-only: kill -9 of any process at any instant loses nothing and duplicates nothing.

Recovery is the worker's retry of a job whose work horse died, the scheduler's sweep (orders
pending for ORDER_STUCK_AFTER without a live job are enqueued again) and the mailer's lease (a
message leased but not marked sent is due again after MAILER_LEASE_SECONDS); the gateway's
idempotency key makes a rerun charge nothing twice.
"""

import asyncio
import os
import signal
import socket
import threading
import time
from urllib.parse import urlencode

import django_rq
import psutil
import psycopg
import pytest
from django.db import connection

from core.queues import DEFAULT_QUEUE
from embedded.polling import wait_until
from embedded.shopper import Browser, checkout_data, hidden
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Order, SandboxCharge
from tests import factories
from tests.process.support import assert_exactly_once, order_status, work_horse
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.crash, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]


# How soon an order killed mid-job must be paid and confirmed again, with the default settings
# (seconds from the kill): the sweep's bound (settings.ORDER_SWEEP_INTERVAL) plus the job, with margin.
PAID_WITHIN = 15
CONFIRMED_WITHIN = 75


def _default_recovery_settings(formation) -> None:
    """Run the formation with the shipped sweep settings instead of the fixture's fast ones."""
    for name in ("ORDER_SWEEP_INTERVAL", "ORDER_STUCK_AFTER"):
        formation.env.pop(name, None)


def _left(since: float, bound: float) -> float:
    return max(bound - (time.monotonic() - since), 0.1)


def test_work_horse_killed_after_the_charge_before_the_commit(formation, smtp):
    _default_recovery_settings(formation)
    formation.start("scheduler")
    formation.start("mailer")
    worker = formation.start("worker", PAYMENT_SANDBOX_LATENCY_MS="2000")
    order, other = factories.order(email="crash@example.com"), factories.order(email="crash@example.com")
    wait_until(lambda: SandboxCharge.objects.exists(), deadline=15, message="the gateway's charge")
    work_horse(worker).kill()  # SIGKILL: the charge is at the gateway, the shop's transaction never commits
    killed = time.monotonic()
    wait_until(lambda: order_status(order) == "paid", deadline=PAID_WITHIN, message="the order to be paid again")
    print(f"recovery after kill -9 of the work horse: {time.monotonic() - killed:.1f}s")
    wait_until(lambda: order_status(other) == "paid", deadline=30, message="the next order")
    wait_until(lambda: len(smtp.messages) >= 2, deadline=_left(killed, CONFIRMED_WITHIN), message="both confirmations")
    assert worker.popen.poll() is None  # the worker itself lived on
    assert_exactly_once([order, other], smtp)


def test_whole_worker_killed_mid_job_is_recovered_by_another_worker(formation, smtp):
    _default_recovery_settings(formation)
    formation.start("scheduler")
    formation.start("mailer")
    worker = formation.start("worker", PAYMENT_SANDBOX_LATENCY_MS="2000")
    order = factories.order(email="crash@example.com")
    wait_until(lambda: SandboxCharge.objects.exists(), deadline=15, message="the gateway's charge")
    for process in (psutil.Process(worker.pid), work_horse(worker)):  # the container dies: every process
        process.kill()
    killed = time.monotonic()
    worker.wait()
    formation.start("worker")  # the orchestrator's replacement
    wait_until(
        lambda: order_status(order) == "paid",
        deadline=_left(killed, PAID_WITHIN),
        message="the sweep and the new worker",
    )
    print(f"recovery after kill -9 of the whole worker: {time.monotonic() - killed:.1f}s")
    wait_until(lambda: smtp.messages, deadline=_left(killed, CONFIRMED_WITHIN), message="the confirmation")
    assert_exactly_once([order], smtp)


def test_worker_killed_between_taking_a_job_and_starting_it_loses_no_order(formation, smtp):
    """A worker on several queues pops a job and marks it started only in its work horse; kill -9 in
    between (held open here by SIGSTOP) leaves a job that says queued while no queue holds it."""
    formation.start("mailer")
    worker = formation.start("worker")
    redis = django_rq.get_connection(DEFAULT_QUEUE)
    # "Listening on" comes before the pop is sent: stop the worker only once Redis holds its BLPOP.
    wait_until(
        lambda: any(client.get("cmd") == "blpop" for client in redis.client_list()),
        deadline=15,
        message="the worker's blocking pop",
    )
    os.kill(worker.pid, signal.SIGSTOP)  # blocked in its pop, which Redis still answers
    try:
        order = factories.order(email="popped@example.com")
        queue = django_rq.get_queue(DEFAULT_QUEUE)
        wait_until(
            lambda: queue.get_job_position(order.job_id) is None, deadline=15, message="the worker's pop of the job"
        )
    finally:
        worker.kill()  # SIGKILL to its group; a stopped process dies of it too
    formation.start("worker")
    formation.start("scheduler")
    wait_until(lambda: order_status(order) == "paid", deadline=60, message="the sweep to recover the popped job")
    assert_exactly_once([order], smtp)


def _block_rcpt_once(smtp) -> tuple[threading.Event, threading.Event]:
    """Make the SMTP server hold the first RCPT until released; return the events (arrived, release):
    the server sets ``arrived`` when that RCPT comes, the test sets ``release`` to let it through."""
    arrived, release = threading.Event(), threading.Event()

    async def handle_rcpt(server, session, envelope, address, rcpt_options):
        if not arrived.is_set():
            arrived.set()
            while not release.is_set():
                await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    smtp.handle_RCPT = handle_rcpt
    return arrived, release


def test_mailer_killed_before_the_server_accepted_sends_the_message_once(formation, smtp):
    arrived, release = _block_rcpt_once(smtp)
    message = factories.outbox_message(to="a@example.com")
    mailer = formation.start("mailer")
    assert arrived.wait(timeout=15)
    mailer.kill()
    release.set()
    formation.start("mailer")
    wait_until(lambda: smtp.messages, deadline=30, message="the message after its lease expired")
    # The server's 250 comes before the mailer records the message as sent: wait for the record.
    wait_until(
        lambda: OutboxMessage.objects.get(pk=message.pk).status == OutboxStatus.SENT,
        deadline=15,
        message="the message to be recorded as sent",
    )
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT and message.attempts == 2
    assert smtp.message_ids() == [message.message_id]


def test_mailer_killed_after_the_server_accepted_resends_with_the_same_message_id(formation, smtp):
    """The one window where a duplicate is possible: the SMTP server said 250, the mailer died
    before recording it. The retry carries the same Message-ID, so the receiver can drop it."""
    message = factories.outbox_message(to="a@example.com")
    db = connection.settings_dict
    locker = psycopg.connect(
        host=db["HOST"],
        port=db["PORT"] or None,
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
        application_name="test-locker",
    )
    accepted = threading.Event()
    original = type(smtp).handle_DATA

    async def accept_then_stall_the_mark_sent(server, session, envelope):
        if not accepted.is_set():
            # Hold the outbox row so the mailer's "mark sent" waits, right after our 250.
            locker.execute("SELECT 1 FROM mailer_outboxmessage WHERE id = %s FOR UPDATE", [message.pk])
            accepted.set()
        return await original(smtp, server, session, envelope)

    smtp.handle_DATA = accept_then_stall_the_mark_sent
    try:
        mailer = formation.start("mailer")
        assert accepted.wait(timeout=15)

        def mark_sent_waits():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'formation/mailer/%%'"
                    " AND wait_event_type = 'Lock' AND datname = current_database()"
                )
                return cursor.fetchone()[0] > 0

        wait_until(mark_sent_waits, deadline=15, message="the mailer's update to wait on the row")
        mailer.kill()
        # PostgreSQL would still finish the orphaned UPDATE once the row is free; end its
        # backend too, so the outcome is that of a mailer that died before its UPDATE arrived.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'formation/mailer/%%'"
                " AND wait_event_type = 'Lock' AND datname = current_database()"
            )
    finally:
        locker.rollback()
        locker.close()
    formation.start("mailer")
    wait_until(lambda: len(smtp.messages) == 2, deadline=30, message="the resend after the lease")
    # The server's 250 comes before the mailer records the message as sent: wait for the record.
    wait_until(
        lambda: OutboxMessage.objects.get(pk=message.pk).status == OutboxStatus.SENT,
        deadline=15,
        message="the resend to be recorded as sent",
    )
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 1
    assert smtp.message_ids() == [message.message_id, message.message_id]


def test_web_killed_mid_request_writes_nothing_and_the_retry_creates_one_order(formation):
    factories.product()
    web = formation.start("web")
    port = int(web.env["PORT"])
    browser = Browser(f"http://127.0.0.1:{port}")
    browser.add_to_cart()
    page = browser.request("/checkout/")[2]
    form = {**checkout_data(token=hidden("token", page)), "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
    body = urlencode(form).encode()
    cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies)
    request = (
        f"POST /checkout/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Cookie: {cookies}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    half.sendall(request + body[: len(body) // 2])
    web.kill()
    half.close()
    assert Order.objects.count() == 0
    formation.start("web")
    assert browser.request("/checkout/", form)[0] == 303
    assert browser.request("/checkout/", form)[0] == 303  # the shopper's retry
    assert Order.objects.count() == 1
