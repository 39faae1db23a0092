"""Register the periodic jobs of settings.PERIODIC_JOBS with rq-scheduler under fixed ids."""

from datetime import UTC, datetime

from django.conf import settings


def periodic_jobs_register(*, scheduler) -> list[str]:
    """Schedule every entry of settings.PERIODIC_JOBS on ``scheduler`` (an rq_scheduler.Scheduler).

    Each entry is ``{"id": str, "func": dotted path, "interval": seconds}``. Scheduling under a
    fixed id overwrites the job hash and its place in the schedule (rq-scheduler's
    ``schedule(id=…)``), so any number of restarts leaves exactly one copy of each job, with
    the interval of the latest start. Return the ids.
    """
    registered = []
    for entry in settings.PERIODIC_JOBS:
        scheduler.schedule(
            scheduled_time=datetime.now(UTC),
            func=entry["func"],
            interval=entry["interval"],
            repeat=None,
            id=entry["id"],
            result_ttl=entry["interval"] * 10,
            timeout=settings.RQ_JOB_TIMEOUT,
        )
        registered.append(entry["id"])
    return registered
