"""``{% rq_scheduler_instances as state %}`` for django-rq's dashboard (templates/django_rq/stats.html)."""

import django_rq
from django import template
from redis.exceptions import RedisError

from core.queues import DEFAULT_QUEUE
from processes.scheduler import scheduler_instances

register = template.Library()


@register.simple_tag
def rq_scheduler_instances() -> list | None:
    """Return the live rq-scheduler instances (SchedulerInstance) of the default queue's Redis
    (processes.scheduler.scheduler_instances), or None when Redis fails: the page still renders."""
    try:
        return scheduler_instances(connection=django_rq.get_connection(DEFAULT_QUEUE))
    except RedisError:
        return None
