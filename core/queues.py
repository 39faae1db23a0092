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
        client = _connections.setdefault(key, keep_alive(get_redis_connection(config)))
    return client


def keep_alive(client):
    """Give the ``redis.Redis`` ``client`` settings.REDIS_SOCKET_OPTIONS (TCP keepalives) and return it.

    For clients built from a URL alone (django-rq's, RQ's worker and scheduler), whose URL cannot
    carry ``socket_keepalive_options``: the options go into the client's pool, and a connection it
    opened before without them is closed and dropped, so every connection it opens from now on carries them
    (a silent connection then ends within REDIS_SILENCE_TIMEOUT seconds).
    """
    from django.conf import settings

    kwargs = client.connection_pool.connection_kwargs
    if any(kwargs.get(key) != value for key, value in settings.REDIS_SOCKET_OPTIONS.items()):
        kwargs.update(settings.REDIS_SOCKET_OPTIONS)
        # A Connection reads its options when made, so the ones already made are dropped too.
        client.connection_pool.disconnect()
        client.connection_pool.reset()
    return client
