"""order_process and the sweep: idempotent against reruns, crashes after the charge and lost jobs."""

import time
import uuid

import django_rq
import pytest
from django.test import override_settings

from core.queues import DEFAULT_QUEUE
from mailer.models import OutboxMessage
from orders import services
from orders.models import Charge, Order, OrderStatusChange, PaymentMethod, SandboxCharge
from orders.payments import PaymentTimeout
from orders.queueing import orders_sweep_pending
from orders.services import InvalidStatusTransition, LineRequest, order_create, order_process
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.queues import queued_job_ids, run_burst_worker

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def test_process_twice_charges_once_and_emails_once(product):
    order = factories.order(product=product)
    assert order_process(order_id=order.pk).status == "paid"
    assert order_process(order_id=order.pk).status == "paid"
    assert Charge.objects.filter(order=order).count() == 1
    assert SandboxCharge.objects.count() == 1
    assert OutboxMessage.objects.count() == 1
    assert list(OrderStatusChange.objects.values_list("from_status", "to_status")) == [("pending", "paid")]


def test_duplicate_jobs_run_by_a_real_worker_charge_once(product):
    order = factories.order(product=product)
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    queue.enqueue("orders.jobs.process_order", str(order.pk))  # a stray second job for the same order
    assert len(queued_job_ids()) == 2
    run_burst_worker()
    assert Order.objects.get().status == "paid"
    assert Charge.objects.count() == SandboxCharge.objects.count() == OutboxMessage.objects.count() == 1


def test_crash_after_charge_before_commit_is_retried_without_a_second_charge(product, monkeypatch):
    order = factories.order(product=product)
    real_create = Charge.objects.create

    def crash(**kwargs):
        raise RuntimeError("worker died between the gateway's answer and the commit")

    monkeypatch.setattr(Charge.objects, "create", crash)
    with pytest.raises(RuntimeError):
        order_process(order_id=order.pk)
    order.refresh_from_db()
    assert order.status == "pending"
    assert SandboxCharge.objects.count() == 1  # the provider kept its charge
    assert OutboxMessage.objects.count() == 0  # the shop's transaction rolled back whole

    monkeypatch.setattr(Charge.objects, "create", real_create)
    assert order_process(order_id=order.pk).status == "paid"
    assert SandboxCharge.objects.count() == 1
    assert Charge.objects.get().gateway_charge_id == SandboxCharge.objects.get().charge_id
    assert OutboxMessage.objects.count() == 1


def test_provider_slower_than_the_payment_timeout_is_settled_by_the_retry_with_one_charge(product, settings):
    order = factories.order(product=product)
    settings.PAYMENT_TIMEOUT = 0.2
    settings.PAYMENT_SANDBOX_LATENCY_MS = 5000  # the provider answers long after the call's bound
    began = time.monotonic()
    with pytest.raises(PaymentTimeout):
        order_process(order_id=order.pk)
    assert time.monotonic() - began < 2  # the call was cut at its timeout, not at the provider's pace
    order.refresh_from_db()
    assert order.status == "pending"
    assert SandboxCharge.objects.count() == 1  # the provider took the money

    settings.PAYMENT_SANDBOX_LATENCY_MS = 0  # the provider answers again
    assert order_process(order_id=order.pk).status == "paid"
    assert SandboxCharge.objects.count() == 1  # charged once
    assert Charge.objects.get().gateway_charge_id == SandboxCharge.objects.get().charge_id
    assert OutboxMessage.objects.count() == 1


def test_declined_payment_fails_the_order_with_a_reason(product):
    order = factories.order(product=product, payment_method=PaymentMethod.DECLINED)
    processed = order_process(order_id=order.pk)
    assert processed.status == "failed"
    assert "declined" in processed.failure_reason
    assert Charge.objects.count() == 0
    assert order_process(order_id=order.pk).status == "failed"
    assert OutboxMessage.objects.get().key == f"order-failed-{order.pk}"


def test_final_statuses_cannot_move(product):
    order = factories.order(product=product)
    order_process(order_id=order.pk)
    with pytest.raises(InvalidStatusTransition):
        services.order_set_status(order=Order.objects.get(), status="pending")


def test_same_idempotency_key_returns_the_first_order(product):
    key = uuid.uuid4()
    first, created = order_create(email="a@example.com", lines=[LineRequest(product.pk, 1)], idempotency_key=key)
    again, created_again = order_create(email="a@example.com", lines=[LineRequest(product.pk, 5)], idempotency_key=key)
    assert created and not created_again
    assert again.pk == first.pk
    assert Order.objects.count() == 1


def test_checkout_while_redis_is_down_keeps_the_order_and_the_sweep_enqueues_it(product):
    closed = "redis://127.0.0.1:9/0?socket_connect_timeout=0.5"
    with override_settings(RQ_QUEUES={DEFAULT_QUEUE: {"URL": closed, "DEFAULT_TIMEOUT": 60}}):
        order = factories.order(product=product)
    assert Order.objects.get().status == "pending"
    assert queued_job_ids() == []

    assert orders_sweep_pending(older_than=0) == 1
    assert orders_sweep_pending(older_than=0) == 0  # queued now: not enqueued twice
    run_burst_worker()
    assert Order.objects.get(pk=order.pk).status == "paid"
    assert SandboxCharge.objects.count() == 1


def test_sweep_replaces_a_failed_job(product):
    order = factories.order(product=product)
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    job = queue.fetch_job(order.job_id)
    queue.remove(job)
    job.set_status("failed")  # as RQ records a job whose work horse was killed
    assert orders_sweep_pending(older_than=0) == 1
    assert queued_job_ids() == [order.job_id]


def test_sweep_leaves_young_orders_alone(product):
    factories.order(product=product)
    django_rq.get_connection(DEFAULT_QUEUE).flushdb()
    assert orders_sweep_pending(older_than=3600) == 0


@pytest.mark.parametrize("status", ["queued", "deferred", "scheduled"])
def test_sweep_replaces_a_job_whose_status_no_queue_or_registry_backs(product, status):
    """A worker on several queues pops a job (rq's dequeue_any) and marks it started only in its
    work horse: killed in between, it leaves a job that says queued while no queue holds it."""
    order = factories.order(product=product)
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    assert queue.connection.lpop(queue.key) == order.job_id.encode()  # what the worker's pop does
    queue.fetch_job(order.job_id).set_status(status)
    assert orders_sweep_pending(older_than=0) == 1
    assert queued_job_ids() == [order.job_id]
    run_burst_worker()
    assert Order.objects.get(pk=order.pk).status == "paid"
    assert SandboxCharge.objects.count() == 1


def test_orders_enqueue_through_one_redis_connection(product):
    factories.order(product=product)  # the process's client connects once
    connection = django_rq.get_connection(DEFAULT_QUEUE)
    before = connection.info("stats")["total_connections_received"]
    for _ in range(5):
        factories.order(product=product)
    assert len(queued_job_ids()) == 6
    # queued_job_ids' own client is the one new connection.
    assert connection.info("stats")["total_connections_received"] - before <= 1


def db_now():
    """The database's clock now (an aware datetime): retry times are set from it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def test_a_provider_with_no_answer_is_asked_again_with_a_growing_gap_per_order(product, settings):
    order = factories.order(product=product)
    settings.PAYMENT_TIMEOUT = 0.05
    settings.PAYMENT_SANDBOX_LATENCY_MS = 5000
    settings.PAYMENT_RETRY_BASE, settings.PAYMENT_RETRY_CAP = 10, 60
    django_rq.get_queue(DEFAULT_QUEUE).empty()  # its job lost: only the sweep would enqueue it again
    gaps = []
    for _ in range(4):
        with pytest.raises(PaymentTimeout):
            order_process(order_id=order.pk)
        order.refresh_from_db()
        gaps.append(round((order.payment_retry_at - db_now()).total_seconds()))
        # Until its retry time the sweep leaves the order alone, however often it runs.
        assert orders_sweep_pending(older_than=0) == 0
        assert queued_job_ids() == []
    assert order.payment_timeouts == 4
    assert gaps == [10, 20, 40, 60]  # base × 2^(n-1), capped
    charge = SandboxCharge.objects.get()
    assert charge.requests == 4  # the provider was asked four times, with one key
    # Its time come, the sweep enqueues it once; the provider answering now, it is paid once.
    Order.objects.filter(pk=order.pk).update(payment_retry_at=db_now())
    assert orders_sweep_pending(older_than=0) == 1
    settings.PAYMENT_SANDBOX_LATENCY_MS = 0
    run_burst_worker()
    order.refresh_from_db()
    assert order.status == "paid"
    assert Charge.objects.get().gateway_charge_id == charge.charge_id
    assert SandboxCharge.objects.get().requests == 5


def test_an_order_unsettled_past_the_bound_is_logged_counted_and_filtered_for_staff(product, settings, client, caplog):
    from datetime import timedelta

    from tests.support.metrics import metric_samples, sample

    settings.PAYMENT_TIMEOUT = 0.05
    settings.PAYMENT_SANDBOX_LATENCY_MS = 5000
    settings.PAYMENT_UNSETTLED_AFTER = 600
    settings.METRICS_TOKEN = "test-metrics-token-0123456789"
    fresh, old = factories.order(product=product), factories.order(product=product)
    Order.objects.filter(pk=old.pk).update(created_at=db_now() - timedelta(seconds=601))
    for order in (fresh, old):
        with pytest.raises(PaymentTimeout):
            order_process(order_id=order.pk)
    unsettled = [r.getMessage() for r in caplog.records if "payment unsettled" in r.getMessage()]
    assert len(unsettled) == 1 and str(old.pk) in unsettled[0]

    samples = metric_samples(
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").content.decode()
    )
    assert sample(samples, "formation_orders_payment_unsettled") == 1

    client.force_login(factories.staff_user(superuser=True))
    listed = client.get("/admin/orders/order/?payment=unsettled").content.decode()
    assert str(old.pk) in listed and str(fresh.pk) not in listed
    both = client.get("/admin/orders/order/?payment=timed-out").content.decode()
    assert str(old.pk) in both and str(fresh.pk) in both
