"""Backing-service faults while the formation runs: PostgreSQL connections killed, Redis restarted
(idle and mid-job) and Redis down during checkout. No process is restarted by the test."""

import signal
import threading

import pytest
import redis
import rq
from django.db import connection

from embedded.polling import wait_until
from embedded.shopper import Browser, checkout_data, element, hidden
from orders.models import Order, SandboxCharge
from processes.worker import Worker
from tests import factories
from tests.process.support import app_backends, assert_exactly_once, order_status
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.faults, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]


def test_all_database_connections_killed(formation, smtp):
    web = formation.start("web")
    processes = [web, formation.start("worker"), formation.start("mailer")]
    browser = Browser(f"http://127.0.0.1:{web.env['PORT']}")
    first = factories.order(email="fault@example.com")
    wait_until(lambda: smtp.messages, deadline=30, message="the first confirmation")
    assert browser.request("/")[0] == 200  # web now holds a persistent connection
    assert app_backends(), "the formation should hold database connections"

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS pid", [app_backends()])

    assert browser.request("/")[0] == 200  # the very first request after: no dead pooled connection
    assert browser.request("/ready")[0] == 200
    second = factories.order(email="fault@example.com")
    wait_until(lambda: len(smtp.messages) == 2, deadline=30, message="the second confirmation")
    assert all(process.popen.poll() is None for process in processes)
    assert_exactly_once([first, second], smtp)


def test_redis_restarted_while_the_worker_is_idle(formation, own_redis):
    worker = formation.start("worker")
    own_redis.stop()
    own_redis.start()
    order = factories.order(email="fault@example.com")
    try:
        wait_until(lambda: order_status(order) == "paid", deadline=60, message="the worker to dequeue after a restart")
    except AssertionError as exc:  # say what the worker did meanwhile
        raise AssertionError(f"{exc}\n--- worker output ---\n{worker.output()}") from None
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(deadline=30) == 0


def test_redis_restarted_while_a_job_runs(formation, own_redis, smtp):
    worker = formation.start("worker", PAYMENT_SANDBOX_LATENCY_MS="2000")
    formation.start("mailer")
    order = factories.order(email="fault@example.com")
    wait_until(lambda: SandboxCharge.objects.exists(), deadline=15, message="the job to be charging")
    own_redis.stop()
    # The job commits in PostgreSQL while Redis is down; RQ then fails to record its result.
    wait_until(lambda: order_status(order) == "paid", deadline=30, message="the running job to commit")
    own_redis.start()
    after = factories.order(email="fault@example.com")
    wait_until(lambda: order_status(after) == "paid", deadline=60, message="the next job after the restart")
    wait_until(lambda: len(smtp.messages) == 2, deadline=30, message="both confirmations")
    assert_exactly_once([order, after], smtp)
    assert worker.popen.poll() is None, worker.output()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(deadline=30) == 0


@pytest.mark.parametrize("step", ["check_for_suspension", "run_maintenance_tasks", "dequeue_job_and_maintain_ttl"])
def test_redis_down_at_any_step_of_the_worker_loop_is_waited_out(own_redis, step):
    # RQ retries only around its blocking pop; CI once stopped Redis just after "Listening on",
    # as the worker wrote its IDLE state, and the worker quit. Here Redis stops right before
    # each other step of the loop and comes back 1 s later: the worker must go on to the job.
    connection = redis.Redis.from_url(own_redis.url)
    job = rq.Queue("faults", connection=connection).enqueue("os.getpid")
    restart = threading.Timer(1.0, own_redis.start)
    taken = []

    def redis_stops_first(self, *args):
        if not restart.is_alive() and not restart.finished.is_set():
            own_redis.stop()
            restart.start()
        return getattr(Worker, step)(self, *args)

    def execute_job(self, job, queue):  # the loop is under test, not the work horse
        taken.append(job.id)

    worker_class = type("StepWorker", (Worker,), {step: redis_stops_first, "execute_job": execute_job})
    worker = worker_class(["faults"], connection=connection)
    try:
        worker.work(burst=True, max_jobs=1)
    finally:
        # Whatever work() did, the timer's restart must happen before the fixture stops Redis, or
        # a redis-server started after the teardown would outlive the test.
        restart.join()
    assert taken == [job.id]


def test_worker_stops_on_sigterm_while_redis_is_down(formation, own_redis):
    worker = formation.start("worker")
    own_redis.stop()
    wait_until(lambda: "could not connect to Redis" in worker.output(), deadline=30, message="the worker to notice")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(deadline=15) == 0, worker.output()


def test_scheduler_stops_on_sigterm_while_redis_is_down(formation, own_redis):
    scheduler = formation.start("scheduler", command="exec python manage.py rqscheduler --interval 1")
    own_redis.stop()
    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(deadline=15) == 0


def test_redis_down_during_checkout_the_order_is_accepted_and_processed_once_back(formation, own_redis, smtp):
    factories.product()
    web = formation.start("web")
    for kind in ("worker", "scheduler", "mailer"):
        formation.start(kind)
    own_redis.stop()

    browser = Browser(f"http://127.0.0.1:{web.env['PORT']}")
    browser.add_to_cart()
    page = browser.request("/checkout/")[2]
    form = {**checkout_data(token=hidden("token", page)), "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
    status, headers, _ = browser.request("/checkout/", form)
    assert status == 303
    assert element(browser.request(headers["Location"])[2], "#order-status").text == "pending"
    order = Order.objects.get()

    own_redis.start()
    wait_until(
        lambda: order_status(order) == "paid", deadline=90, message="the sweep to enqueue the order once Redis is back"
    )
    wait_until(lambda: smtp.messages, deadline=30, message="the confirmation")
    assert_exactly_once([order], smtp)
