"""Redis that comes back empty (FLUSHALL, a restart without persistence, a failover to an empty node)
while a worker and a scheduler run: each process writes again the registration that liveness reads
(the worker's key and its place in the rq:workers sets, the scheduler's key), the scheduler takes its
lock again and puts back the periodic jobs, so the sweep pays an order that had no job, and a new
order is paid. Documented in docs/processes.md#liveness."""

import pytest
import redis

from embedded.polling import wait_until
from tests import factories
from tests.process.support import order_status
from tests.process.test_liveness import kubelet_probe, start_as_deployed
from tests.process.test_probes import probe
from tests.process.test_redis_error_replies import closed_port
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.faults, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

# The smallest RQ_WORKER_TTL the settings accept: an idle worker heartbeats before each blocking pop,
# every RQ_WORKER_TTL - 15 = 5 s, so it registers again within 5 s of the flush.
WORKER_TTL = "20"
# Seconds from the flush until both probes pass: the worker's bound (5 s), the scheduler's (one tick,
# 1 s), and a manage.py probe's own start (~1 s each) on a busy two-core machine.
BACK_WITHIN = 20


def test_processes_register_again_after_redis_loses_its_data(formation, own_redis, settings):
    worker = start_as_deployed(formation, "worker", RQ_WORKER_TTL=WORKER_TTL)
    scheduler = start_as_deployed(formation, "scheduler")
    connection = redis.Redis.from_url(own_redis.url)
    env = worker.env
    for kind in ("worker", "scheduler"):
        wait_until(lambda kind=kind: probe(kind, env).returncode == 0, deadline=30, message=f"probe {kind} to pass")

    connection.flushall()
    try:
        for kind in ("worker", "scheduler"):
            wait_until(
                lambda kind=kind: probe(kind, env).returncode == 0,
                deadline=BACK_WITHIN,
                interval=0.5,
                message=f"probe {kind} to pass again after FLUSHALL",
            )
        # The deployed liveness probes (HTTP on METRICS_PORT) never asked Redis: still alive.
        assert kubelet_probe("worker", "livenessProbe", worker)[0]
        assert kubelet_probe("scheduler", "livenessProbe", scheduler)[0]
        periodic = [job["id"] for job in settings.PERIODIC_JOBS]
        wait_until(
            lambda: all(connection.zscore("rq:scheduler:scheduled_jobs", job) is not None for job in periodic),
            deadline=10,
            message="the periodic jobs to be scheduled again",
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- worker ---\n{worker.output()}\n--- scheduler ---\n{scheduler.output()}"
        ) from None
    assert "registered again" in worker.output()
    assert "registered again" in scheduler.output()

    # An order whose enqueue found no Redis (here: a closed port) has no job: only the sweep, a
    # periodic job put back above, enqueues it.
    reachable = settings.RQ_QUEUES
    default = next(iter(reachable))
    settings.RQ_QUEUES = {default: {**reachable[default], "URL": f"redis://127.0.0.1:{closed_port()}/0"}}
    without_job = factories.order(email="no-job@example.com")
    settings.RQ_QUEUES = reachable
    assert order_status(without_job) == "pending"
    new = factories.order(email="new@example.com")
    for order in (without_job, new):
        wait_until(lambda order=order: order_status(order) == "paid", deadline=30, message=f"order {order.email}")
    assert worker.popen.poll() is None and scheduler.popen.poll() is None
