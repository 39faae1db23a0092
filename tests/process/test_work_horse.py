"""The worker loads what jobs need once, before its first fork, and every work horse inherits it."""

import os

import django_rq
import pytest

from core.queues import DEFAULT_QUEUE
from processes import worker
from tests.support.databases import ALL_DATABASES
from tests.support.queues import run_burst_worker

preloads: list[int] = []


def preload() -> None:
    preloads.append(os.getpid())


def report() -> dict:
    return {"horse": os.getpid(), "preloads": list(preloads)}


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
def test_the_preload_runs_once_in_the_worker_and_every_horse_inherits_it(monkeypatch):
    monkeypatch.setattr(worker, "WORK_HORSE_PRELOAD", (f"{__name__}.preload",))
    preloads.clear()
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    jobs = [queue.enqueue(f"{__name__}.report") for _ in range(3)]
    run_burst_worker()  # this process is the worker
    reports = [job.return_value() for job in jobs]
    assert preloads == [os.getpid()]
    assert [r["preloads"] for r in reports] == [[os.getpid()]] * 3
    assert len({r["horse"] for r in reports} | {os.getpid()}) == 4  # each job in a horse of its own


def test_the_order_jobs_preload_is_the_default():
    assert worker.WORK_HORSE_PRELOAD == ("orders.jobs.warm_up",)
