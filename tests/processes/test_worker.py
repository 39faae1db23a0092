"""A job that PostgreSQL refuses a connection is put back unrun with its retries, the worker waits
before the next job and says so in a line, not a traceback; other database errors fail as before.

The worker runs in this test's process (it forks a real work horse per job) on the test's Redis;
the jobs open their connections through Django, as the shop's jobs do.
"""

import logging
import re
import time

import django_rq
import pytest
from django.db import connection, connections
from prometheus_client import REGISTRY
from rq.job import JobStatus, Retry

from core.backoff import Backoff
from core.queues import DEFAULT_QUEUE
from embedded.servers import free_port
from processes.worker import DATABASE_BACKOFF_BASE, Worker

pytestmark = pytest.mark.django_db(transaction=True)

ATTEMPTS = "test:attempts"


def _connect(**overrides) -> None:
    """Open (and close) a new connection of the ``default`` alias with ``overrides`` of its settings."""
    wrapper = connections.create_connection("default")
    wrapper.settings_dict = {**wrapper.settings_dict, **overrides}
    wrapper.ensure_connection()
    wrapper.close()


def refused_then_connects(refusals: int, closed_port: int) -> str:
    """Job: note the time of this attempt; the first ``refusals`` attempts connect where nothing listens."""
    redis = django_rq.get_connection(DEFAULT_QUEUE)
    if redis.rpush(ATTEMPTS, time.monotonic()) <= refusals:
        _connect(PORT=str(closed_port))
    _connect()
    return "connected"


def statement_timeout() -> None:
    """Job: a statement cancelled by statement_timeout, on a connection that was opened fine."""
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 50")
        cursor.execute("SELECT pg_sleep(2)")


def write_once() -> str:
    """Job: an UPDATE (of no row): refused when the database is read-only, whatever it matches."""
    from django.contrib.sessions.models import Session

    Session.objects.filter(session_key="").update(session_data="")
    return "written"


def _attempt_times() -> list[float]:
    return [float(value) for value in django_rq.get_connection(DEFAULT_QUEUE).lrange(ATTEMPTS, 0, -1)]


def _deferred(reason: str) -> float:
    labels = {"queue": DEFAULT_QUEUE, "reason": reason}
    return REGISTRY.get_sample_value("formation_worker_jobs_deferred_total", labels) or 0.0


@pytest.fixture
def worker_log(tmp_path):
    """Return a function that reads every line the worker and its work horses log (RQ's loggers):
    a file handler, which each forked horse inherits, unlike pytest's capture of this process."""
    path = tmp_path / "worker.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(process)d %(message)s"))
    loggers = [logging.getLogger(name) for name in ("rq.worker", "rq.job")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield lambda: path.read_text()
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)
    handler.close()


def _worker(*, highest_waits: bool = False) -> Worker:
    """A Worker on the default queue; with ``highest_waits`` its backoff always waits its ceiling."""
    connections.close_all()  # as django-rq's rqworker does: no connection of this process in a horse
    worker = Worker([DEFAULT_QUEUE], connection=django_rq.get_connection(DEFAULT_QUEUE))
    if highest_waits:
        worker._database_backoff = Backoff(base=DATABASE_BACKOFF_BASE, cap=60, uniform=lambda low, high: high)
    return worker


def test_a_refused_job_is_put_back_at_the_front_unrun_with_its_retries_and_no_traceback(worker_log):
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    job = queue.enqueue(f"{__name__}.refused_then_connects", 1, free_port(), retry=Retry(max=3))
    behind = queue.enqueue("os.getpid")
    deferred_before = _deferred("unreachable")
    worker = _worker(highest_waits=True)
    worker.work(burst=True, max_jobs=1)
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED
    assert queue.get_job_ids() == [job.id, behind.id]
    assert job.retries_left == 3
    assert job.latest_result() is None  # never recorded as failed
    assert queue.failed_job_registry.count == 0 and queue.started_job_registry.count == 0
    assert _deferred("unreachable") == deferred_before + 1
    lines = worker_log().splitlines()
    assert [line.split(" ", 2)[2] for line in lines if not line.startswith("INFO")] == [
        "PostgreSQL refused connections (unreachable: Connection refused): 1 job put back just now, "
        "unrun and with no retry spent; next try in 1.0 s"
    ]
    assert not any("Traceback" in line for line in lines)
    assert worker._database_backoff.attempt == 1


def test_the_worker_waits_longer_after_each_refusal_and_starts_again_once_a_job_connects(worker_log):
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    job = queue.enqueue(f"{__name__}.refused_then_connects", 2, free_port(), retry=Retry(max=3))
    worker = _worker(highest_waits=True)
    worker.work(burst=True, max_jobs=3)
    first, second, third = _attempt_times()
    # The waits are the backoff's ceilings: 1 s, then 2 s (the horse's own fork and exit come on top).
    assert second - first >= 1.0 and third - second >= 2.0
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == "connected"
    assert job.retries_left == 3
    messages = [line.split(" ", 2)[2] for line in worker_log().splitlines()]
    assert sum(m.startswith("PostgreSQL refused connections") for m in messages) == 1  # one line per 10 s
    # Over the last 3 s on an idle machine: the waits (1 + 2 s) and two forks; more on a loaded one.
    assert any(
        re.fullmatch(r"PostgreSQL accepts connections again: 2 jobs put back over the last \d+ s", m) for m in messages
    )
    assert not any("Traceback" in m for m in messages)
    assert worker._database_wait_until == 0.0 and worker._database_backoff.attempt == 0


def test_a_database_error_on_an_open_connection_still_fails_the_job_and_spends_a_retry(worker_log):
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    job = queue.enqueue(f"{__name__}.statement_timeout", retry=Retry(max=3))
    deferred_before = sum(_deferred(reason) for reason in ("too_many_clients", "not_accepting", "unreachable"))
    worker = _worker()
    worker.work(burst=True, max_jobs=1)
    job.refresh()
    assert job.retries_left == 2  # RQ's retry, spent
    log = worker_log()
    assert "Traceback" in log and "canceling statement due to statement timeout" in log
    assert "PostgreSQL refused" not in log
    assert worker._database_wait_until == 0.0
    assert sum(_deferred(reason) for reason in ("too_many_clients", "not_accepting", "unreachable")) == deferred_before


def test_a_job_refused_by_a_read_only_database_is_put_back_and_runs_once_writes_are_accepted(worker_log, read_only):
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    read_only(True)
    job = queue.enqueue(f"{__name__}.write_once", retry=Retry(max=3))
    worker = _worker()
    worker.work(burst=True, max_jobs=1)
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED
    assert job.retries_left == 3 and job.latest_result() is None
    assert queue.failed_job_registry.count == 0
    assert (
        "PostgreSQL refused writes (read-only: cannot execute UPDATE in a read-only transaction): 1 job put back"
        in worker_log()
    )
    assert "refused connections" not in worker_log()
    assert "Traceback" not in worker_log()
    read_only(False)
    _worker().work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == "written"


def test_a_heartbeat_registers_the_worker_again_after_redis_lost_its_data(own_redis):
    # Redis of the test's own: FLUSHALL empties every database of a server.
    connection = django_rq.get_connection(DEFAULT_QUEUE)
    worker = Worker([DEFAULT_QUEUE], connection=connection)
    worker.register_birth()
    born = connection.hget(worker.key, "birth")
    connection.flushall()
    # RQ heartbeats in a pipeline when it starts a job: that re-creates a hash holding only
    # last_heartbeat, outside the rq:workers sets, which rq's register_birth takes for a live namesake.
    with connection.pipeline() as pipeline:
        worker.heartbeat(pipeline=pipeline)
        pipeline.execute()
    assert Worker.all(connection=connection) == []

    worker.heartbeat()

    [found] = Worker.all(connection=connection)
    assert (found.name, found.hostname) == (worker.name, worker.hostname)
    assert Worker.all(queue=django_rq.get_queue(DEFAULT_QUEUE, connection=connection)) == [found]
    assert connection.hget(worker.key, "birth") == born
    assert 0 < connection.ttl(worker.key) <= worker.worker_ttl + 60
