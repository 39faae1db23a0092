"""Queue an order's processing job, and recover orders whose job Redis lost or no worker runs.

An order has one RQ job, under a fixed id (orders.models.order_job_id), so a second enqueue of
the same order is a no-op. Callers enqueue after commit (transaction.on_commit), so the job always
sees the order. When Redis is unreachable the order stays pending in PostgreSQL and the
scheduler's sweep (orders_sweep_pending) enqueues it later. Nothing here changes an order: the
job (orders.jobs.process_order) calls orders.services.order_process, which is idempotent.
"""

import logging
import uuid
from datetime import timedelta

import django_rq
from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus, Retry
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry

from core import context
from core.dbclock import db_now
from core.queues import DEFAULT_QUEUE, redis_connection
from orders.models import Order, OrderStatus, order_job_id

logger = logging.getLogger(__name__)
# Times RQ puts an order's job straight back at the front of its queue when it fails or its work
# horse dies (kill -9, out of memory): recovery in seconds while the worker lives, without waiting
# for the sweep. Bounded, so an order that kills every horse cannot crash-loop a worker; past it
# the sweep takes over (orders_sweep_pending). A rerun is harmless: orders.services.order_process is idempotent.
ORDER_JOB_RETRIES = 3


def order_enqueue(*, order_id: uuid.UUID | str, at_front: bool = False, request_id: str | None = None) -> bool:
    """Enqueue ``orders.jobs.process_order(order_id)`` under the order's fixed job id.

    ``at_front`` puts it ahead of the queued orders (the sweep's recoveries are the oldest). A job
    that fails or whose work horse dies is retried at once, at the front, up to ORDER_JOB_RETRIES times.
    ``request_id`` (default: the log context's) goes into the job's ``meta["request_id"]``, which
    the worker binds while it performs the job (processes.worker.Worker).

    Return True when a job was enqueued, False when one with that id exists already or Redis
    is unreachable (the order stays pending in PostgreSQL and the scheduler's sweep enqueues
    it later, so checkout never fails because of Redis).
    """
    job_id = order_job_id(order_id)
    if request_id is None:
        request_id = context.current().get("request_id")
    try:
        django_rq.get_queue(DEFAULT_QUEUE, connection=redis_connection(DEFAULT_QUEUE)).enqueue(
            "orders.jobs.process_order",
            str(order_id),
            job_id=job_id,
            unique=True,
            result_ttl=3600,
            at_front=at_front,
            meta={"request_id": request_id} if request_id else None,
            retry=Retry(max=ORDER_JOB_RETRIES, enqueue_at_front=True),
        )
    except DuplicateJobError:
        return False
    except RedisError as exc:
        logger.warning("order %s not enqueued, Redis unavailable (%s); the sweep will retry", order_id, exc)
        return False
    return True


def orders_sweep_pending(*, older_than: float | None = None) -> int:
    """Re-enqueue pending orders older than ``older_than`` seconds that have no live job.

    A job is live when Redis will still run it: queued *and* in its queue, deferred or scheduled
    *and* in that registry, or started with a heartbeat newer than ``older_than`` (a running job's
    worker refreshes it every processes.worker.JOB_HEARTBEAT_SECONDS). Anything else is deleted and
    enqueued again: no job (Redis lost it or was down at checkout), a failed job (its work horse
    was killed past its retries), a started job whose whole worker was killed (no heartbeat any
    more), or a job whose status says queued while no queue holds it — a worker listening on
    several queues takes a job with a plain pop (rq's ``Queue.dequeue_any``) and marks it started
    only in the forked work horse, so a worker killed between the two leaves exactly that.
    Return how many orders were enqueued. Default ``older_than`` is settings.ORDER_STUCK_AFTER
    (seconds).

    The sweep runs every few seconds (settings.ORDER_SWEEP_INTERVAL), also while a backlog of
    orders waits in the queue: it reads the queue once and the orders' jobs in one pipeline, so a
    pass costs a few Redis round trips whatever the number of pending orders.
    """
    older_than = settings.ORDER_STUCK_AFTER if older_than is None else older_than
    cutoff = db_now() - timedelta(seconds=older_than)
    # An order whose payment call had no answer waits for its own backoff (payment_retry_at, set
    # from the database's clock by orders.services.order_payment_retry_later).
    pending = dict(
        Order.objects.filter(status=OrderStatus.PENDING, created_at__lt=cutoff)
        .filter(Q(payment_retry_at__isnull=True) | Q(payment_retry_at__lte=Now()))
        .values_list("id", "request_id")
    )
    if not pending:
        return 0
    order_ids = list(pending)
    connection = redis_connection(DEFAULT_QUEUE)
    # The queue is read before the jobs: a job popped in between says started (live) by then,
    # while the other order would take a job queued after the read for a lost one.
    queued = set(Queue(DEFAULT_QUEUE, connection=connection).get_job_ids())
    jobs = Job.fetch_many([order_job_id(order_id) for order_id in order_ids], connection=connection)
    enqueued = 0
    for order_id, job in zip(order_ids, jobs, strict=True):
        if job is not None:
            status = job.get_status(refresh=False)
            if status == JobStatus.QUEUED and job.origin == DEFAULT_QUEUE:
                if job.id in queued:
                    continue
            elif _job_is_live(job, cutoff=cutoff):
                continue
            job.delete()
        # The checkout's request id (the sweep has none): the recovered job's lines join the checkout's.
        if order_enqueue(order_id=order_id, at_front=True, request_id=pending[order_id]):
            enqueued += 1
            logger.info("order %s re-enqueued (job was %s)", order_id, "missing" if job is None else status)
    return enqueued


def order_requeue(*, order_id: uuid.UUID | str, cutoff, request_id: str | None = None) -> bool:
    """Enqueue the order's processing job at the front unless Redis still runs the one it has.

    ``request_id`` goes with the job as in order_enqueue (default: the log context's).

    ``cutoff`` (an aware datetime): a started job whose last heartbeat is older is dead. A job
    that is not live (see orders_sweep_pending) is deleted first, since its fixed id would make
    the new enqueue a no-op. Return True when a job was enqueued; False when a live job exists
    or Redis is unreachable (the sweep enqueues the order later). Raise RedisError only from the
    job lookup (the caller decides: the sweep fails its run, staff see a message).
    """
    job_id = order_job_id(order_id)
    try:
        job = Job.fetch(job_id, connection=redis_connection(DEFAULT_QUEUE))
    except NoSuchJobError:
        job = None
    if job is not None:
        status = job.get_status(refresh=False)
        if _job_is_live(job, cutoff=cutoff):
            return False
        job.delete()
    if not order_enqueue(order_id=order_id, at_front=True, request_id=request_id or None):
        return False
    logger.info("order %s re-enqueued (job was %s)", order_id, "missing" if job is None else status)
    return True


def _job_is_live(job, *, cutoff) -> bool:
    """Return True when Redis will still run ``job``: its status and where it is agree."""
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        return Queue(job.origin, connection=job.connection).get_job_position(job.id) is not None
    if status == JobStatus.DEFERRED:
        return job.id in DeferredJobRegistry(job.origin, connection=job.connection)
    if status == JobStatus.SCHEDULED:
        return job.id in ScheduledJobRegistry(job.origin, connection=job.connection)
    if status == JobStatus.STARTED:
        return job.last_heartbeat is not None and job.last_heartbeat >= cutoff
    return False
