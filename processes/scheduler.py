"""rq-scheduler with Formation's periodic jobs (settings.RQ["SCHEDULER_CLASS"]).

Periodic jobs live in Redis under fixed ids (settings.PERIODIC_JOBS). They are registered at
scheduler start, and every tick that holds rq-scheduler's lock puts back any that is missing
(Redis restarted without its data), so no restart or Redis loss ever leaves zero or two copies.
"""

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import django_rq
from django.conf import settings
from django_rq.queues import DjangoScheduler
from redis.exceptions import RedisError

from core import liveness, metrics
from core.queues import MAINTENANCE_QUEUE, keep_alive

logger = logging.getLogger("scheduler")
# Seconds: the longest wait between two reconnect attempts after Redis went away.
MAX_RECONNECT_WAIT = 30.0


class Scheduler(DjangoScheduler):
    """DjangoScheduler that keeps settings.PERIODIC_JOBS scheduled under their fixed ids, and
    whose SIGTERM/SIGINT always ends the process, even when Redis is down at that moment."""

    stopping = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # TCP keepalives on the scheduler's Redis connection (core.queues.keep_alive).
        keep_alive(self.connection)

    def _install_signal_handlers(self):
        def stop(signum, frame):
            self.stopping = True
            # rq-scheduler's own handler releases the lock and records its death in Redis before
            # SystemExit; with Redis unreachable that raises instead and the process lives on.
            self.log.info("Shutting down RQ scheduler...")
            try:
                self.register_death()
                self.remove_lock()
            except RedisError as exc:
                self.log.warning("scheduler: Redis unavailable while stopping (%s); the lock expires by itself", exc)
            raise SystemExit(0)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def heartbeat(self):
        """Beat (core.liveness) on every tick, whether Redis answers or not, then refresh this
        scheduler's key in Redis (rq-scheduler's heartbeat: its time to live is ``interval`` + 10 s).

        A key that is gone (Redis lost its data: FLUSHALL, a restart without persistence, a failover
        to an empty node) is written again, as rq-scheduler's register_birth does, within the same
        tick: rq-scheduler's EXPIRE alone leaves it missing, and ``manage.py probe scheduler`` reads
        it. A RedisError propagates (scheduler_run reconnects).
        """
        liveness.beat()
        ttl = int(self._interval) + 10
        # EXPIRE answers 0 for a missing key: the usual tick stays one round trip.
        if not self.connection.expire(self.key, ttl):
            with self.connection.pipeline() as pipeline:
                pipeline.hset(self.key, "birth", time.time())
                pipeline.expire(self.key, ttl)
                pipeline.execute()
            logger.warning(
                "scheduler: its key %s was missing from Redis (Redis lost its data); registered again", self.key
            )

    def enqueue_jobs(self):
        """Restore missing periodic jobs, then move due jobs to their queues (runs under the lock).

        A stop requested earlier ends the process here: the SystemExit raised by the signal handler
        can be swallowed when it lands inside a weakref or import-lock callback.
        """
        if self.stopping:
            raise SystemExit(0)
        periodic_jobs_register(scheduler=self, only_missing=True)
        return super().enqueue_jobs()

    def enqueue_job(self, job):
        """Move one due ``job`` to its queue (rq-scheduler) and count it (core.metrics)."""
        enqueued = super().enqueue_job(job)
        metrics.SCHEDULER_JOBS_ENQUEUED.labels(job.origin).inc()
        return enqueued


def liveness_max_age(*, interval: float) -> float:
    """Return how many seconds a live scheduler's loop may go without a beat (core.liveness), for
    one ticking every ``interval`` seconds: it beats on every tick, and while Redis is away on every
    reconnect attempt, MAX_RECONNECT_WAIT apart at most; a margin of 30 s for the attempt itself
    (each connect gives up after REDIS_CONNECT_TIMEOUT). 61 s with ``--interval 1``."""
    return interval + MAX_RECONNECT_WAIT + 30


def periodic_jobs_register(*, scheduler: DjangoScheduler, only_missing: bool = False) -> list[str]:
    """Schedule every entry of settings.PERIODIC_JOBS on ``scheduler``; return the ids scheduled.

    Each entry is ``{"id": str, "func": dotted path, "interval": seconds}``. Scheduling under a
    fixed id overwrites the job hash and its place in the schedule (rq-scheduler's
    ``schedule(id=…)``), so any number of restarts leaves exactly one copy of each job, with the
    interval of the latest start. A job already scheduled keeps its next run time, so starting
    another scheduler never runs a job early. With ``only_missing``, scheduled ids are left alone.
    """
    registered = []
    for entry in settings.PERIODIC_JOBS:
        next_run = scheduler.connection.zscore(scheduler.scheduled_jobs_key, entry["id"])
        if only_missing and next_run is not None:
            continue
        scheduler.schedule(
            scheduled_time=datetime.fromtimestamp(next_run, UTC) if next_run is not None else datetime.now(UTC),
            func=entry["func"],
            interval=entry["interval"],
            repeat=None,
            id=entry["id"],
            result_ttl=entry["interval"] * 10,
            timeout=settings.RQ_JOB_TIMEOUT,
            queue_name=MAINTENANCE_QUEUE,
        )
        registered.append(entry["id"])
    return registered


@dataclass(frozen=True)
class SchedulerInstance:
    """One rq-scheduler process registered in Redis: its ``name`` (host.pid.run, see scheduler_run)
    and ``birth``, when it registered (an aware datetime; None when the key has no birth field)."""

    name: str
    birth: datetime | None


def scheduler_instances(*, connection) -> list[SchedulerInstance]:
    """Return the live rq-scheduler instances in the Redis of ``connection`` (a redis client), by
    name. An instance is live while its key exists without a ``death`` field
    (rq_scheduler.Scheduler.register_birth / register_death; the key expires ``--interval`` + 10 s
    after its last tick). Raise RedisError when Redis fails."""
    instances = []
    for key in sorted(connection.scan_iter(match=f"{Scheduler.redis_scheduler_namespace_prefix}*")):
        fields = connection.hgetall(key)
        if b"death" in fields:
            continue
        birth = fields.get(b"birth")
        instances.append(
            SchedulerInstance(
                name=key.decode().removeprefix(Scheduler.redis_scheduler_namespace_prefix),
                birth=datetime.fromtimestamp(float(birth), UTC) if birth else None,
            )
        )
    return instances


def scheduler_run(*, queue: str, interval: float) -> None:
    """Run rq-scheduler for ``queue`` (a settings.RQ_QUEUES name), ticking every ``interval`` seconds.

    Each run registers settings.PERIODIC_JOBS (periodic_jobs_register), then runs the scheduler
    until it is stopped. When Redis goes away, say so in one line and start a new run after a
    wait that doubles from 1 s up to MAX_RECONNECT_WAIT. Return when a SIGTERM or SIGINT stopped
    the scheduler (rq-scheduler exits by SystemExit from its handler, which propagates; a stop
    whose clean-up could not reach Redis returns). Errors other than RedisError propagate.
    """
    wait = 1.0
    run = 0
    scheduler = None
    while True:
        run += 1
        liveness.beat()
        try:
            scheduler = django_rq.get_scheduler(name=queue, interval=interval)
            # A name per host, process and run: the liveness probe finds it by host, and a
            # run after a Redis outage never collides with the key of the previous one.
            scheduler.name = f"{socket.gethostname()}.{os.getpid()}.{run}"
            ids = periodic_jobs_register(scheduler=scheduler)
            logger.info("scheduler: periodic jobs registered: %s", ", ".join(ids))
            wait = 1.0
            scheduler.run()
            return
        except RedisError as exc:
            if getattr(scheduler, "stopping", False):
                # Asked to stop: rq-scheduler's clean-up could not reach Redis; the lock expires.
                logger.info("scheduler: stopped (Redis unreachable during clean-up)")
                return
            logger.error("scheduler: Redis unavailable (%s); reconnecting in %gs", exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, MAX_RECONNECT_WAIT)
