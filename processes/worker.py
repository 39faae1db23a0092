"""The RQ worker class of the ``worker`` process type (settings.RQ["WORKER_CLASS"]).

Procfile: ``worker: exec python manage.py rqworker maintenance default``. On SIGTERM or SIGINT the
worker finishes the job in progress (warm shutdown; its work horse ignores the signal) and a second
signal kills the horse (cold shutdown). It also outlives Redis going away at any step of its loop,
and records each job's metrics and log ids around the horse. Documented in
docs/processes.md#graceful-shutdown and docs/processes.md#backing-service-faults.
"""

import signal
import time
import uuid

import redis.exceptions
import rq
from django.conf import settings
from django.db import connections
from django.utils.module_loading import import_string
from rq.exceptions import InvalidJobOperation, StopRequested
from rq.job import Job, JobStatus

from core import context, liveness, metrics

# Redis going away at any instant must not end the worker. RQ retries only around its blocking pop;
# every other Redis call of its loop (the suspension check, the registry clean-up, the IDLE state it
# writes before the pop, what it records after a job) ends the worker with "found an unhandled
# exception, quitting", which under honcho stops the whole formation. So each of those steps below
# says what failed in one line, waits for Redis to answer again and goes on: a job's own effects are
# in PostgreSQL by then.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Seconds to wait for Redis to answer again after it failed around a job.
REDIS_WAIT = 60.0


# Seconds between a running job's heartbeats (RQ's default is 30 s). The sweep takes a started job
# whose heartbeat is older than settings.ORDER_STUCK_AFTER for dead (its whole worker was killed), so
# that setting must be a few heartbeats long: 6 s by default, three of these.
JOB_HEARTBEAT_SECONDS = 2

# Called in the worker once, before its first work horse is forked: what it loads (data, compiled
# templates) every horse inherits, instead of loading it again in each one, per job, and losing it
# with the horse (an order job spent ~200 ms of its ~215 ms loading babel's data and templates).
# Called right after the worker says it is listening, before its first pop: the start is no longer
# for it (start → ready), and the first job does not wait for it either.
WORK_HORSE_PRELOAD = ("orders.jobs.warm_up",)


def liveness_max_age(*, worker_ttl: int) -> float:
    """Return how many seconds a live worker's loop may go without a beat (core.liveness), for a
    worker started with ``worker_ttl`` (RQ_WORKER_TTL, seconds).

    The worker beats with each of RQ's heartbeats: before each blocking pop, after each job, and
    every JOB_HEARTBEAT_SECONDS of a job; and every second while it waits for Redis. The longest
    gap is a Redis that stopped answering: a command that times out (RQ's socket timeout, its
    dequeue timeout ``worker_ttl`` - 15 plus 10 s), RQ's blocking pop that times out the same way,
    then its wait before the next attempt (up to ``max_connection_wait_time``, 60 s). A margin of
    10 s on top: with the default RQ_WORKER_TTL of 60 s, 180 s.
    """
    socket_timeout = max(1, worker_ttl - 15) + 10
    return 2 * socket_timeout + rq.Worker.max_connection_wait_time + 10


def worker_name(*, release: str) -> str:
    """Return a new RQ worker name for ``release``: ``<32 hex digits>.<release>``."""
    return f"{uuid.uuid4().hex}.{release}"


def worker_release(name: str) -> str | None:
    """Return the release in an RQ worker's ``name`` (worker_name), or None for a name without one
    (a worker of a version before releases were named)."""
    head, dot, release = name.partition(".")
    return release if dot and len(head) == 32 else None


class Worker(rq.Worker):
    """rq.Worker whose work horse ignores SIGTERM/SIGINT, that survives Redis restarts mid-job and
    refreshes a running job's heartbeat every JOB_HEARTBEAT_SECONDS, so the sweep can tell a long
    job from a dead one within seconds."""

    def __init__(self, queues, name: str | None = None, *args, **kwargs):
        kwargs.setdefault("job_monitoring_interval", JOB_HEARTBEAT_SECONDS)
        # RQ's own default name (a random hex) followed by the release, so that the post-deploy step
        # can tell the workers of another release from this one's (processes.stages.other_releases).
        super().__init__(queues, name or worker_name(release=settings.RELEASE), *args, **kwargs)
        self._preloaded = False
        worker = self

        class StopCheckedQueue(self.queue_class):
            @classmethod
            def dequeue_any(cls, *args, **kwargs):
                # RQ's blocking pop (up to RQ_WORKER_TTL - 15 s) comes after steps that log
                # (heartbeat, registry clean-up): a stop swallowed there must not wait in it.
                if worker._stop_requested:
                    raise StopRequested()
                return super().dequeue_any(*args, **kwargs)

        self.queue_class = StopCheckedQueue

    def setup_work_horse_signals(self):
        """Make the work horse ignore SIGTERM and SIGINT: the worker alone decides how its job ends.

        RQ resets SIGTERM to its default action in the horse (rq/worker/base.py). RQ puts the horse
        in a process group of its own, so honcho's signal to the worker's group does not reach it;
        but platforms that signal every process of the container do (Heroku sends SIGTERM to "all
        processes in the dyno"; systemd's default KillMode=control-group), and that would kill the
        job mid-way while the worker, in a warm shutdown, waits for it. Ignored here: a warm shutdown
        lets the job finish; a second signal (cold shutdown) makes RQ SIGKILL the horse
        (``kill_horse``), and the sweep recovers the job.
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def main_work_horse(self, job, queue):
        metrics.listeners_close()
        return super().main_work_horse(job, queue)

    def perform_job(self, job, *args, **kwargs):
        try:
            # Bound again in the horse: a fork inherits the context, a spawned horse would not.
            with job_context(job):
                return super().perform_job(job, *args, **kwargs)
        finally:
            # The horse ends with os._exit(): say goodbye to PostgreSQL instead of vanishing.
            connections.close_all()

    def execute_job(self, job, queue):
        # Metrics are recorded here, in the worker, around the horse: a counter incremented in the
        # horse would vanish with it (forked per job, it ends with os._exit). The outcome is the
        # job's status in Redis once the horse has ended (_job_outcome: one HGET per job).
        metrics.WORKER_JOBS_STARTED.labels(queue.name).inc()
        start = time.perf_counter()
        try:
            with job_context(job):
                return super().execute_job(job, queue)
        except REDIS_ERRORS as exc:
            self.log.warning(
                "Worker %s: Redis unavailable while finishing job %s (%s); its effects are committed "
                "or rolled back in PostgreSQL, the sweep re-checks its order; waiting for Redis",
                self.name,
                job.id,
                exc,
            )
            self._horse_pid = 0
            self._wait_for_redis()
        finally:
            metrics.job_observe(queue=queue.name, outcome=self._job_outcome(job), seconds=time.perf_counter() - start)

    def _job_outcome(self, job) -> str | None:
        """Return ``"finished"`` or ``"failed"`` from the status the ended job has in Redis, else
        None (re-queued or scheduled for a retry, deleted, or Redis unreachable to tell)."""
        try:
            status = job.get_status(refresh=True)
        except (InvalidJobOperation, *REDIS_ERRORS):
            return None
        return {JobStatus.FINISHED: "finished", JobStatus.FAILED: "failed"}.get(status)

    def _shutdown(self):
        # Recorded before RQ raises StopRequested. When the worker is not busy, RQ's handler raises it
        # and records nothing; if the signal lands inside a log call, logging.Handler.emit swallows
        # the exception ("--- Logging error ---") and the worker went on listening until honcho's
        # SIGKILL (seen in CI on the "job dequeued" line). The work loop breaks on this flag after the
        # current step (rq/worker/base.py, ``work``), and StopCheckedQueue checks it before the pop.
        self._stop_requested = True
        super()._shutdown()

    def handle_job_success(self, job, queue, *args, **kwargs):
        """RQ's success handling, then drop the job's id from the failed registry: a periodic job
        keeps one id from run to run (processes.scheduler.periodic_jobs_register), so a run that
        failed while PostgreSQL was down stayed "failed" (for RQ's one-year failure TTL) after
        every later run succeeded. The latest outcome of an id is the one that counts."""
        super().handle_job_success(job, queue, *args, **kwargs)
        try:
            queue.failed_job_registry.remove(job)
        except REDIS_ERRORS as exc:
            self.log.warning(
                "Worker %s: job %s left in the failed registry, Redis unavailable (%s)", self.name, job.id, exc
            )

    def check_for_suspension(self, burst):
        self._until_redis_answers("suspension check", super().check_for_suspension, burst)

    def run_maintenance_tasks(self):
        try:
            super().run_maintenance_tasks()
        except REDIS_ERRORS as exc:
            # Housekeeping only: last_cleaned_at is unchanged, so the next pass runs it again.
            self.log.warning("Worker %s: registry clean-up skipped, Redis unavailable (%s)", self.name, exc)

    def _preload(self) -> None:
        if not self._preloaded:
            self._preloaded = True
            for path in WORK_HORSE_PRELOAD:
                import_string(path)()

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        # Before the first pop, once the worker has said it is listening: the first job waits for
        # nothing, and the start is not longer for it.
        self._preload()
        return self._until_redis_answers("dequeue", super().dequeue_job_and_maintain_ttl, timeout, max_idle_time)

    def teardown(self):
        try:
            super().teardown()
        except REDIS_ERRORS as exc:
            # RQ would exit 1, unable to record the worker's death. A stop while Redis is down is
            # still graceful (exit 0): the worker's key in Redis expires by itself (``worker_ttl``).
            self.log.warning("Worker %s: death not recorded, Redis unavailable (%s)", self.name, exc)
            if self.pubsub_thread:
                self.pubsub_thread.stop()

    def heartbeat(self, *args, **kwargs):
        # First, and whether Redis answers or not: the liveness probe asks the loop, not Redis.
        liveness.beat()
        try:
            return super().heartbeat(*args, **kwargs)
        except REDIS_ERRORS as exc:
            self.log.warning("Worker %s: heartbeat skipped, Redis unavailable (%s)", self.name, exc)

    def _until_redis_answers(self, step: str, call, *args):
        """Return ``call(*args)``, retried each time Redis answers again after failing it.

        Raises StopRequested (from RQ's signal handler) when the worker is told to stop meanwhile.
        """
        while True:
            try:
                return call(*args)
            except REDIS_ERRORS as exc:
                self.log.warning("Worker %s: %s failed, Redis unavailable (%s); waiting", self.name, step, exc)
                while not self._wait_for_redis():
                    if self._stop_requested:
                        raise StopRequested() from None

    def _wait_for_redis(self) -> bool:
        """Poll Redis once a second for up to REDIS_WAIT seconds; True once it answers."""
        deadline = time.monotonic() + REDIS_WAIT
        while time.monotonic() < deadline and not self._stop_requested:
            liveness.beat()
            try:
                self.connection.ping()
                return True
            except REDIS_ERRORS:
                time.sleep(1)
        return False


def job_context(job: Job):
    """Return core.context.bind() of ``job``'s id and the request id in its meta (if any).

    That request id is ``job.meta["request_id"]``, set by orders.queueing.order_enqueue: bound in the
    worker and again in the work horse, every line logged for the job carries both ids.
    """
    meta = job.meta if isinstance(job.meta, dict) else {}
    return context.bind(job_id=job.id, request_id=meta.get("request_id") or None)
