"""The names of the RQ queues: settings.RQ_QUEUES declares them, code enqueues and connects by them.

The Procfile's and deploy files' worker command lines name them too, as text
(``rqworker maintenance default``: a worker takes the periodic jobs first).
"""

# The orders (orders.jobs.process_order); also the alias of the Redis connection code uses.
DEFAULT_QUEUE = "default"
# The periodic jobs (settings.PERIODIC_JOBS), which workers take ahead of the orders.
MAINTENANCE_QUEUE = "maintenance"

_connections: dict = {}


def redis_connection(name: str = DEFAULT_QUEUE):
    """Return this process's ``redis.Redis`` client for queue ``name`` (settings.RQ_QUEUES[name]).

    One client per distinct connection setting, kept for the life of the process, so requests
    and jobs reuse its pooled TCP connection. ``django_rq.get_connection`` builds a new client,
    and so a new connection, on every call: a connect plus redis-py's driver-version lookup
    (``importlib.metadata``) cost ~1 ms per ``/ready`` and per checkout's enqueue (measured
    by `make bench`). redis-py's pool is fork-safe (a child gets fresh connections, ConnectionPool's pid
    check) and replaces a connection the server closed (a Redis restart) on next use.

    Raise KeyError for a queue that settings.RQ_QUEUES does not declare.
    """
    from django.conf import settings
    from django_rq.connection_utils import filter_connection_params, get_redis_connection

    config = filter_connection_params(settings.RQ_QUEUES[name])
    key = repr(sorted(config.items()))
    client = _connections.get(key)
    if client is None:
        client = _connections.setdefault(key, get_redis_connection(config))
    return client
