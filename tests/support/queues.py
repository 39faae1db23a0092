"""RQ's default queue in the test's own Redis: its waiting jobs, and a real worker that empties it."""

import django_rq
from django.core.management import call_command

from core.queues import DEFAULT_QUEUE


def run_burst_worker() -> None:
    """Run a real RQ worker (it forks a work horse per job) until the queue is empty."""
    call_command("rqworker", DEFAULT_QUEUE, "--burst", verbosity=0)


def queued_job_ids() -> list[str]:
    """Return the ids of the jobs waiting in the default queue."""
    return django_rq.get_queue(DEFAULT_QUEUE).get_job_ids()
