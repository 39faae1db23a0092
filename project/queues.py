"""The names of the RQ queues: settings.RQ_QUEUES declares them, code enqueues and connects by them.

The Procfile's and deploy files' worker command lines name them too, as text
(``rqworker maintenance default``: a worker takes the periodic jobs first).
"""

# The orders (orders.jobs.process_order); also the alias of the Redis connection code uses.
DEFAULT_QUEUE = "default"
# The periodic jobs (settings.PERIODIC_JOBS), which workers take ahead of the orders.
MAINTENANCE_QUEUE = "maintenance"
