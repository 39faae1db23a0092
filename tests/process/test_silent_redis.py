"""A worker's Redis connection that goes silent without being closed ends within
REDIS_SILENCE_TIMEOUT (TCP keepalives, core.queues.keep_alive): the worker from the Procfile line,
its Redis reached through a link made silent (tests.support.silent_link, root only), stays live
(the manifest's liveness probe over METRICS_PORT passes throughout), says so in its log, and runs
the next job once the link heals; its command channel (RQ's pubsub thread) comes back too, with
one line for the outage."""

import time
from urllib.parse import urlsplit

import django_rq
import pytest
from rq import Worker as RQWorker
from rq.command import send_shutdown_command
from rq.job import Job

from core.queues import DEFAULT_QUEUE
from embedded.polling import wait_until
from tests.process.test_liveness import kubelet_probe, start_as_deployed
from tests.support import silent_link
from tests.support.databases import ALL_DATABASES

pytestmark = [
    pytest.mark.process,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

SILENCE = 4  # seconds: REDIS_SILENCE_TIMEOUT of the worker under test (its minimum)
SILENT_PHASE = SILENCE + 6  # seconds the link stays silent: the pop ends, the worker waits


@pytest.fixture
def redis_link(formation):
    silent_link.require()
    url = urlsplit(formation.env["REDIS_URL"])
    opened = silent_link.SilentLink((url.hostname, url.port))
    try:
        yield opened.open(), url
    finally:
        opened.close()


def test_a_worker_whose_redis_goes_silent_stays_live_and_runs_the_next_job_once_healed(formation, redis_link):
    link, url = redis_link
    host, port = link.address
    through = url._replace(netloc=f"{url.netloc.rpartition('@')[0]}{'@' if '@' in url.netloc else ''}{host}:{port}")
    worker = start_as_deployed(formation, "worker", REDIS_URL=through.geturl(), REDIS_SILENCE_TIMEOUT=str(SILENCE))
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    job = queue.enqueue("time.sleep", 0)
    wait_until(lambda: Job.fetch(job.id, connection=queue.connection).is_finished, deadline=20, message="a first job")

    link.freeze()
    frozen = time.monotonic()
    while time.monotonic() - frozen < SILENT_PHASE:
        ok, what = kubelet_probe("worker", "livenessProbe", worker)
        assert ok, f"liveness failed while Redis was silent: {what}"
        time.sleep(0.5)

    link.heal()
    healed = time.monotonic()
    job = queue.enqueue("time.sleep", 0)
    wait_until(
        lambda: Job.fetch(job.id, connection=queue.connection).is_finished,
        deadline=90,
        interval=0.2,
        message="the next job once the link heals",
    )
    recovered = time.monotonic() - healed

    # The command channel came back too: RQ's shutdown command (rq.command) reaches the worker,
    # which stops warm and exits 0. A command is fire-and-forget (Redis pub/sub): one published
    # before the thread has resubscribed (its retries are 2 s apart) is lost, so it is sent again
    # each second until the worker says it received it.
    # This test's worker only (by its PID): a Redis shared with other runs may list theirs too.
    [name] = [w.name for w in RQWorker.all(connection=queue.connection) if w.pid == worker.pid]

    def told_to_stop() -> bool:
        if "Received shutdown command" in worker.output():
            return True
        send_shutdown_command(queue.connection, name)
        return False

    wait_until(told_to_stop, deadline=20, interval=1, message="the worker to receive the shutdown command")
    wait_until(lambda: not worker.alive(), deadline=15, interval=0.2, message="the worker to stop")
    assert worker.popen.returncode == 0, worker.output()
    output = worker.output()
    assert "Traceback" not in output and "pubsub thread exiting" not in output, output
    lost = [line for line in output.splitlines() if "command channel lost" in line]
    assert len(lost) == 1, lost  # one line for the outage, not one per retry
    print(f"worker: next job ran {recovered:.1f} s after healing; shutdown command obeyed")
