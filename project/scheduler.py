"""rq-scheduler with Formation's periodic jobs (settings.RQ["SCHEDULER_CLASS"]).

Periodic jobs live in Redis under fixed ids (settings.PERIODIC_JOBS). They are registered at
scheduler start, and every tick that holds rq-scheduler's lock puts back any that is missing
(Redis restarted without its data), so no restart or Redis loss ever leaves zero or two copies.
"""

import signal
from datetime import UTC, datetime

from django.conf import settings
from django_rq.queues import DjangoScheduler
from redis.exceptions import RedisError

MAINTENANCE_QUEUE = "maintenance"


class Scheduler(DjangoScheduler):
    """DjangoScheduler that keeps settings.PERIODIC_JOBS scheduled under their fixed ids, and
    whose SIGTERM/SIGINT always ends the process, even when Redis is down at that moment."""

    stopping = False

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

    def enqueue_jobs(self):
        """Restore missing periodic jobs, then move due jobs to their queues (runs under the lock).

        A stop requested earlier ends the process here: the SystemExit raised by the signal handler
        can be swallowed when it lands inside a weakref or import-lock callback.
        """
        if self.stopping:
            raise SystemExit(0)
        periodic_jobs_register(scheduler=self, only_missing=True)
        return super().enqueue_jobs()


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
