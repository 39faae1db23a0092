"""The scheduler process type: several copies, kill -9 of one, and restarts never duplicate a
periodic job. rq-scheduler moves due jobs to their queue under a Redis lock (rq:scheduler_lock,
TTL interval + 10 s); a periodic job is rescheduled one interval after each enqueue."""

import itertools
import signal
import time

import django_rq
import pytest
import rq
from django.conf import settings

from core.queues import DEFAULT_QUEUE, MAINTENANCE_QUEUE
from embedded.polling import wait_until
from processes.worker import Worker
from tests.support.databases import ALL_DATABASES

pytestmark = [
    pytest.mark.process,
    pytest.mark.scheduler,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

SWEEP = b"orders-sweep-pending"
COMMAND = "exec python manage.py rqscheduler --interval 1"
PERIOD = 4  # seconds, ORDER_SWEEP_INTERVAL below
LOCK_TTL = 1 + 10  # rq-scheduler: int(interval) + 10


def sweep_enqueues() -> int:
    """Return how many times the sweep job was put on the queue (no worker takes them here)."""
    return django_rq.get_connection(DEFAULT_QUEUE).lrange(f"rq:queue:{MAINTENANCE_QUEUE}", 0, -1).count(SWEEP)


def enqueue_times(count: int, deadline: float) -> list[float]:
    """Poll the queue; return the monotonic times at which the first ``count`` enqueues were seen."""
    seen: list[float] = []
    last = sweep_enqueues()

    def more():
        nonlocal last
        now = sweep_enqueues()
        seen.extend([time.monotonic()] * (now - last))
        last = now
        return len(seen) >= count

    wait_until(more, deadline=deadline, message=f"{count} sweep enqueues")
    return seen[:count]


def test_several_schedulers_enqueue_each_periodic_job_once_per_period(formation):
    for _ in range(2):
        formation.start("scheduler", command=COMMAND, ORDER_SWEEP_INTERVAL=str(PERIOD))
    times = enqueue_times(1, deadline=15)
    formation.start("scheduler", command=COMMAND, ORDER_SWEEP_INTERVAL=str(PERIOD))  # one more joins
    times += enqueue_times(3, deadline=30)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # A duplicate enqueue (two schedulers in one period, or a joining one running the job early)
    # shows as a gap near 0; one enqueue per period gives gaps of at least PERIOD - 1 tick.
    assert min(gaps) >= PERIOD - 1, gaps


def test_kill_9_of_the_lock_holder_lets_another_take_over_within_the_lock_ttl(formation):
    env = {"ORDER_SWEEP_INTERVAL": str(PERIOD)}
    first = formation.start("scheduler", command=COMMAND, **env)
    standby = formation.start("scheduler", command=COMMAND, **env)
    enqueue_times(1, deadline=15)
    first.kill()
    # As if it died holding the lock mid-tick: the worst case for the standby.
    django_rq.get_connection(DEFAULT_QUEUE).set("rq:scheduler_lock", time.time(), ex=LOCK_TTL, nx=True)
    killed = time.monotonic()
    [taken_over] = enqueue_times(1, deadline=LOCK_TTL + PERIOD + 5)
    print(f"standby took over {taken_over - killed:.1f}s after kill -9 (lock TTL {LOCK_TTL}s)")
    assert standby.popen.poll() is None


@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_restarts_never_duplicate_a_periodic_job(formation, how):
    for _ in range(3):
        scheduler = formation.start("scheduler")
        if how == "SIGTERM":
            scheduler.send_signal(signal.SIGTERM)
            assert scheduler.wait() == 0
        else:
            scheduler.kill()
    jobs = django_rq.get_scheduler(DEFAULT_QUEUE).get_jobs()
    assert sorted(job.id for job in jobs) == sorted(entry["id"] for entry in settings.PERIODIC_JOBS)


def test_periodic_jobs_come_back_after_redis_lost_them(formation):
    formation.start("scheduler", command=COMMAND)
    scheduler = django_rq.get_scheduler(DEFAULT_QUEUE)
    django_rq.get_connection(DEFAULT_QUEUE).flushdb()  # a Redis restart without persistence
    wait_until(
        lambda: sorted(job.id for job in scheduler.get_jobs()) == sorted(e["id"] for e in settings.PERIODIC_JOBS),
        deadline=10,
        message="the periodic jobs to be registered again",
    )


def test_a_periodic_job_that_fails_once_is_not_left_failed_by_its_later_successes():
    # The soak saw orders-sweep-pending and mailer-release-leases in the failed registry for good:
    # one run failed while PostgreSQL restarted, and the later runs under the same id succeeded.
    connection = django_rq.get_connection(DEFAULT_QUEUE)
    queue = rq.Queue("periodic-outcome", connection=connection)
    # Jobs run in this process, not in a forked horse (which would end the test's PostgreSQL
    # connection), and without the horse's closing of every connection (processes.worker).
    inline = type("InlineWorker", (Worker, rq.SimpleWorker), {"perform_job": rq.SimpleWorker.perform_job})
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        queue.enqueue("builtins.int", "not a number", job_id="periodic-outcome-job")
        inline([queue], connection=connection).work(burst=True)
        assert "periodic-outcome-job" in queue.failed_job_registry
        queue.enqueue("os.getpid", job_id="periodic-outcome-job")
        inline([queue], connection=connection).work(burst=True)
        assert "periodic-outcome-job" in queue.finished_job_registry
        assert "periodic-outcome-job" not in queue.failed_job_registry
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
        connection.delete(*connection.keys("*periodic-outcome*"))
