"""The RQ worker class of the ``worker`` process type (settings.RQ["WORKER_CLASS"]).

Procfile: ``worker: exec python manage.py rqworker maintenance default``. On SIGTERM or SIGINT the
worker finishes the job in progress (warm shutdown; its work horse ignores the signal) and a second
signal kills the horse (cold shutdown). It also outlives Redis going away at any step of its loop,
and records each job's metrics and log ids around the horse. A job that PostgreSQL refuses a
connection is put back in its queue, unrun and with no retry spent, and the worker waits (full-jitter
exponential backoff) before taking the next job, saying so in a line per interval rather than a
traceback per job. Documented in docs/processes.md#graceful-shutdown,
docs/processes.md#backing-service-faults and docs/processes.md#postgresql-refusing-connections.
"""

import os
import signal
import time
import uuid

import redis.exceptions
import rq
from django.conf import settings
from django.db import connections
from django.utils.module_loading import import_string
from rq import worker_registration
from rq.exceptions import InvalidJobOperation, StopRequested
from rq.job import Job, JobStatus

from core import context, liveness, metrics
from core.backoff import Backoff
from core.postgresql.refusals import Refusal, RefusalLog, database_refusal
from core.queues import keep_alive

# Redis going away at any instant must not end the worker. RQ retries only around its blocking pop;
# every other Redis call of its loop (the suspension check, the registry clean-up, the IDLE state it
# writes before the pop, what it records after a job) ends the worker with "found an unhandled
# exception, quitting", which under honcho stops the whole formation. So each of those steps below
# says what failed in one line, waits for Redis to answer again and goes on: a job's own effects are
# in PostgreSQL by then. An error reply is the same fault seen from the other side: Redis answers but
# refuses writes (READONLY after a failover left the client on a replica, OOM at maxmemory under
# noeviction, MISCONF when it cannot persist, EXECABORT for a MULTI holding one of those; LOADING is
# already a ConnectionError in redis-py). A READONLY reply ended the worker within a second.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError)
# Seconds: full-jitter backoff (core.backoff) between retries of a step Redis refused with an error
# reply. A PING still succeeds then (it is not a write), so waiting for PING alone would retry at once.
REDIS_REPLY_BACKOFF_BASE = 1.0
REDIS_REPLY_BACKOFF_CAP = 30.0
# Seconds to wait for Redis to answer again after it failed around a job.
REDIS_WAIT = 60.0
# Seconds without a failure of the command channel after which the next one starts a new outage
# (and gets its line): each retry, 2 s apart, fails within a connect timeout while Redis is away.
PUBSUB_OUTAGE_GAP = 30.0


# Seconds between a running job's heartbeats (RQ's default is 30 s). The sweep takes a started job
# whose heartbeat is older than settings.ORDER_STUCK_AFTER for dead (its whole worker was killed), so
# that setting must be a few heartbeats long: 6 s by default, three of these.
JOB_HEARTBEAT_SECONDS = 2

# PostgreSQL refusing connections (no free slot, a restart, nothing listening: see
# core.postgresql.refusals) must not fail jobs or spend their retries: RQ's retries, immediate, were
# all spent within a second, and each left a traceback. The work horse puts the job back at the front
# of its queue instead (still queued and in its queue, which the sweep counts as live, so nothing is
# enqueued twice; if Redis loses it, the order is still pending in PostgreSQL and the sweep enqueues it
# again), and the worker waits before it takes the next job: full-jitter exponential backoff
# (core.backoff), up to DATABASE_BACKOFF_BASE seconds after the first refusal, doubling with each
# refusal in a row up to DATABASE_BACKOFF_CAP, back to the start after a job that connected. So each
# worker forks at most one horse per wait while PostgreSQL refuses, and the workers' retries spread
# out instead of arriving together. Not RQ's Retry(interval=…): that schedules the job in RQ's own
# scheduled registry, which only a worker run ``--with-scheduler`` moves back to its queue, and this
# formation runs rq-scheduler instead; the sweep counts a job in that registry as live, so the order
# would wait forever.
DATABASE_BACKOFF_BASE = 1.0
DATABASE_BACKOFF_CAP = 60.0
# Seconds between two lines saying PostgreSQL refuses connections or writes, per kind of refusal (RefusalLog).
DATABASE_REFUSAL_LOG_INTERVAL = 10.0
# Seconds between the worker's heartbeats while it waits after a refusal (its key in Redis lives
# RQ_WORKER_TTL + 60 s after each, and the liveness probe counts the keys).
WAIT_HEARTBEAT_SECONDS = 10.0

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
    """rq.Worker whose work horse ignores SIGTERM/SIGINT, that survives Redis restarts mid-job,
    refreshes a running job's heartbeat every JOB_HEARTBEAT_SECONDS, so the sweep can tell a long
    job from a dead one within seconds, and puts back a job that PostgreSQL refused a connection,
    then backs off (see DATABASE_BACKOFF_BASE)."""

    def __init__(self, queues, name: str | None = None, *args, **kwargs):
        kwargs.setdefault("job_monitoring_interval", JOB_HEARTBEAT_SECONDS)
        # RQ's own default name (a random hex) followed by the release, so that the post-deploy step
        # can tell the workers of another release from this one's (processes.stages.other_releases).
        super().__init__(queues, name or worker_name(release=settings.RELEASE), *args, **kwargs)
        # TCP keepalives on the worker's and its horses' Redis connections: a silent one ends in an
        # error within REDIS_SILENCE_TIMEOUT instead of blocking the BLPOP for good.
        keep_alive(self.connection)
        self._preloaded = False
        # The worker's side of PostgreSQL refusing connections: its backoff, the time its wait
        # ends (time.monotonic), the lines it logs, and the pipe on which each work horse reports
        # a refused job (a horse is a fork: what it sets in itself ends with it).
        self._database_backoff = Backoff(base=DATABASE_BACKOFF_BASE, cap=DATABASE_BACKOFF_CAP)
        self._redis_reply_backoff = Backoff(base=REDIS_REPLY_BACKOFF_BASE, cap=REDIS_REPLY_BACKOFF_CAP)
        self._database_wait_until = 0.0
        self._database_refusals = RefusalLog(self.log, interval=DATABASE_REFUSAL_LOG_INTERVAL)
        self._refusal_pipe: tuple[int, int] | None = None
        # The horse's side: the refusal of the job it is handling, between handle_exception and
        # handle_job_failure.
        self._refusal: Refusal | None = None
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

    def handle_exception(self, job, *exc_info):
        """In the horse: RQ's handling of a job that raised (a line with the traceback, then the
        exception handlers), except for a refused PostgreSQL connection, which is noted for
        handle_job_failure and logged by the worker in a line per interval (RefusalLog)."""
        self._refusal = database_refusal(exc_info[1]) if exc_info[1] is not None else None
        if self._refusal is None:
            super().handle_exception(job, *exc_info)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        """RQ's handling of a failed job (a retry, else the failed registry), except that a job
        whose connection PostgreSQL refused is put back at the front of its queue (_put_back)."""
        refusal, self._refusal = self._refusal, None
        if refusal is None or self._stopped_job_id == job.id:
            return super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        self._put_back(job, queue, execution, refusal)

    def _put_back(self, job, queue, execution, refusal: Refusal) -> None:
        """In the horse: end ``job``'s execution and enqueue it again at the front of ``queue``, its
        retries untouched; report ``refusal`` to the worker on the pipe. With Redis unreachable the
        job stays started: the sweep re-enqueues its order once its heartbeat is old."""
        try:
            # One MULTI/EXEC: the job is never out of both its queue and the started registry.
            with self.connection.pipeline() as pipeline:
                pipeline.multi()  # RQ's enqueue_job wants a given pipeline in a transaction already
                queue.enqueue_job(job, pipeline=pipeline, at_front=True)
                self.cleanup_execution(job, pipeline=pipeline, execution=execution)
                pipeline.execute()
        except REDIS_ERRORS as exc:
            self.log.warning(
                "Worker %s: job %s not put back after PostgreSQL refused it (%s), Redis unavailable (%s)",
                self.name,
                job.id,
                refusal.detail,
                exc,
            )
            return
        if self._refusal_pipe is not None:
            # One short line (well under PIPE_BUF, so written whole); the worker reads it after the horse.
            os.write(self._refusal_pipe[1], f"{refusal.kind}\t{refusal.detail[:200]}\n".encode())

    def _reported_refusal(self) -> Refusal | None:
        """In the worker, after a horse ended: the refusal it reported on the pipe, else None."""
        if self._refusal_pipe is None:
            return None
        try:
            data = os.read(self._refusal_pipe[0], 65536)
        except BlockingIOError:
            return None
        kind, _, detail = data.decode(errors="replace").strip().splitlines()[-1].partition("\t")
        return Refusal(kind=kind, detail=detail)

    def _after_job(self, queue) -> None:
        """In the worker, after each horse: back off and count when PostgreSQL refused its job,
        else start the backoff again (and say once that connections succeed again)."""
        refusal = self._reported_refusal()
        if refusal is None:
            self._database_backoff.reset()
            self._database_wait_until = 0.0
            self._database_refusals.accepted()
            return
        metrics.WORKER_JOBS_DEFERRED.labels(queue.name, refusal.kind).inc()
        wait = self._database_backoff.next_wait()
        self._database_wait_until = time.monotonic() + wait
        self._database_refusals.record(refusal, wait=wait)

    def _database_backoff_wait(self) -> None:
        """Return once the wait set by the last refusal is over; heartbeat meanwhile.

        Raise StopRequested when the worker is told to stop meanwhile (RQ's handler may also raise
        it from the sleep itself): a warm shutdown need not wait for PostgreSQL.
        """
        last_beat = time.monotonic()
        while (left := self._database_wait_until - time.monotonic()) > 0:
            if self._stop_requested:
                raise StopRequested()
            self.procline(f"PostgreSQL refused the last job, next job in {left:.0f}s")
            time.sleep(min(left, 1.0))
            if time.monotonic() - last_beat >= WAIT_HEARTBEAT_SECONDS:
                self.heartbeat()
                last_beat = time.monotonic()

    def execute_job(self, job, queue):
        # Metrics are recorded here, in the worker, around the horse: a counter incremented in the
        # horse would vanish with it (forked per job, it ends with os._exit). The outcome is the
        # job's status in Redis once the horse has ended (_job_outcome: one HGET per job).
        metrics.WORKER_JOBS_STARTED.labels(queue.name).inc()
        if self._refusal_pipe is None:
            read, write = os.pipe()
            os.set_blocking(read, False)
            self._refusal_pipe = (read, write)
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
            self._after_job(queue)

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
        self._database_backoff_wait()
        return self._until_redis_answers("dequeue", super().dequeue_job_and_maintain_ttl, timeout, max_idle_time)

    def teardown(self):
        if self._refusal_pipe is not None:
            for fd in self._refusal_pipe:
                os.close(fd)
            self._refusal_pipe = None
        try:
            super().teardown()
        except REDIS_ERRORS as exc:
            # RQ would exit 1, unable to record the worker's death. A stop while Redis is down is
            # still graceful (exit 0): the worker's key in Redis expires by itself (``worker_ttl``).
            self.log.warning("Worker %s: death not recorded, Redis unavailable (%s)", self.name, exc)
            if self.pubsub_thread:
                self.pubsub_thread.stop()

    def _pubsub_exception_handler(self, exc, pubsub, pubsub_thread) -> None:
        """Keep the command channel's thread (RQ's shutdown, kill-horse and stop-job commands)
        through any Redis outage, and say so in one line per outage.

        RQ's own handler retries a ConnectionError but lets the thread exit on a TimeoutError, which
        is what reconnecting through a silent link raises ("Timeout connecting to server"): the
        worker then ignored every command for the rest of its life. Here every REDIS_ERRORS is
        retried 2 s later (RQ's own pause); redis-py subscribes again once it reconnects. Any other
        error is RQ's case (the thread exits). Called from the pubsub thread with redis-py's
        PubSubWorkerThread arguments; returns None.
        """
        if not isinstance(exc, REDIS_ERRORS):
            return super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
        now = time.monotonic()
        last = getattr(self, "_pubsub_failed_at", None)
        if last is None or now - last > PUBSUB_OUTAGE_GAP:
            self.log.warning("Worker %s: command channel lost, Redis unavailable (%s); resubscribing", self.name, exc)
        self._pubsub_failed_at = now
        time.sleep(2.0)

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        """Beat (core.liveness), then refresh this worker's key in Redis (rq's Worker.heartbeat).

        ``timeout`` is the key's time to live in seconds (RQ's default: ``worker_ttl`` + 60). Called
        on its own (no ``pipeline``: before each blocking pop, every JOB_HEARTBEAT_SECONDS of a job),
        it also finds out, in the same round trip, whether Redis still holds this worker's
        registration, and makes it again when not (_register_again). Never raises a Redis error: it
        says so in one line and the next heartbeat tries again.
        """
        # First, and whether Redis answers or not: the liveness probe asks the loop, not Redis.
        liveness.beat()
        try:
            if pipeline is not None:
                return super().heartbeat(timeout, pipeline=pipeline)
            # Redis that lost its data (FLUSHALL, a restart without persistence, a failover to an
            # empty node) keeps no trace of the worker: RQ's heartbeat alone would re-create a hash
            # holding only last_heartbeat, outside the rq:workers sets that Worker.all and
            # ``manage.py probe worker`` read, so the worker would look dead while it works.
            with self.connection.pipeline(transaction=False) as check:
                check.sismember(self.redis_workers_keys, self.key)
                check.hexists(self.key, "birth")
                super().heartbeat(timeout, pipeline=check)
                listed, born = check.execute()[:2]
            if not (listed and born):
                self._register_again()
        except REDIS_ERRORS as exc:
            self.log.warning("Worker %s: heartbeat skipped, Redis unavailable (%s)", self.name, exc)

    def _register_again(self) -> None:
        """Write this worker's registration again, as rq's register_birth does (its hash, its place in
        the rq:workers sets, its time to live), keeping its birth date; say so in one line.

        Not register_birth itself: it raises ValueError when a hash of this name exists without a
        death, which a heartbeat sent in a pipeline meanwhile re-creates (rq's Worker.heartbeat).
        """
        with self.connection.pipeline() as pipeline:
            pipeline.delete(self.key)
            pipeline.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()
        self.log.warning(
            "Worker %s: its registration was missing from Redis (Redis lost its data); registered again", self.name
        )

    def _until_redis_answers(self, step: str, call, *args):
        """Return ``call(*args)``, retried each time Redis answers again after failing it.

        Raises StopRequested (from RQ's signal handler) when the worker is told to stop meanwhile.
        """
        while True:
            try:
                result = call(*args)
            except REDIS_ERRORS as exc:
                self.log.warning("Worker %s: %s failed, Redis unavailable (%s); waiting", self.name, step, exc)
                if isinstance(exc, redis.exceptions.ResponseError):
                    self._sleep_beating(self._redis_reply_backoff.next_wait())
                while not self._wait_for_redis():
                    if self._stop_requested:
                        raise StopRequested() from None
            else:
                self._redis_reply_backoff.reset()
                return result

    def _sleep_beating(self, seconds: float) -> None:
        """Sleep ``seconds`` in slices of at most 1 s, beating liveness; raise StopRequested when the
        worker is told to stop meanwhile (a warm shutdown need not wait for Redis)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            liveness.beat()
            if self._stop_requested:
                raise StopRequested()
            time.sleep(min(left, 1.0))

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
