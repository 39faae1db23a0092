"""Prometheus metrics of every process type (prometheus-client, https://prometheus.github.io/client_python/).

The metric objects, the collector registry the apps add theirs to (collector_register), web's
``/metrics`` view and the METRICS_PORT server of worker, scheduler and mailer (metrics_serve), which
also answers their probes (core.liveness); both ask for the bearer METRICS_TOKEN, but on the probes.
Documented in docs/observability.md#metrics.
"""

import functools
import hmac
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.liveness import Probes
from core.preflight import first_line

logger = logging.getLogger(__name__)

# Every metric here has labels, so none has a value (and, in web's multiprocess mode, no file)
# in a process that never records it: web does not show the mailer's metrics at zero. Every label's
# values are bounded: views are URL pattern names (request_observe), statuses HTTP codes, queues and
# results the code's own lists.
HTTP_REQUESTS = Counter(
    "formation_http_requests",
    "Requests web answered, by view (the URL pattern's name) and HTTP status code.",
    ["view", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "formation_http_request_duration_seconds",
    "Seconds from the first middleware receiving a request to its response, by view.",
    ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WORKER_JOBS_STARTED = Counter("formation_worker_jobs_started", "Jobs a worker started, by queue.", ["queue"])
WORKER_JOBS_FINISHED = Counter(
    "formation_worker_jobs_finished", "Jobs that finished successfully, by queue.", ["queue"]
)
WORKER_JOBS_FAILED = Counter(
    "formation_worker_jobs_failed",
    "Jobs that failed (raised, timed out, or their work horse died), by queue.",
    ["queue"],
)
WORKER_JOBS_DEFERRED = Counter(
    "formation_worker_jobs_deferred",
    "Jobs put back in their queue, unrun and with no retry spent, because PostgreSQL refused the "
    "connection, by queue and reason: too_many_clients, not_accepting, unreachable "
    "(core.postgresql.refusals).",
    ["queue", "reason"],
)
WORKER_JOB_SECONDS = Histogram(
    "formation_worker_job_duration_seconds",
    "Seconds a job took as its worker saw it (the work horse's fork to its exit), by queue.",
    ["queue"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
SCHEDULER_JOBS_ENQUEUED = Counter(
    "formation_scheduler_jobs_enqueued", "Due scheduled jobs this scheduler moved to their queue, by queue.", ["queue"]
)
# Results of one attempt to send one outbox message (mailer.engine.outbox_message_send).
SEND_SENT, SEND_TRANSIENT, SEND_PERMANENT, SEND_UNKNOWN = "sent", "failed_transient", "failed_permanent", "error"
MAILER_SENDS = Counter(
    "formation_mailer_sends",
    "Attempts to send an outbox message, by result: sent, failed_transient (retried), failed_permanent "
    "(failed for good), error (unexpected; retried up to MAILER_MAX_ATTEMPTS).",
    ["result"],
)
MAILER_SEND_SECONDS = Histogram(
    "formation_mailer_send_duration_seconds",
    "Seconds one attempt to send an outbox message took (the SMTP exchange), by result.",
    ["result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# Web's gunicorn workers by state, what web's autoscaler follows (docs/deployment.md#kubernetes):
# each worker is 1 in "busy" while it handles a request and 1 in "idle" otherwise, and web's
# /metrics adds up its live workers (prometheus-client's multiprocess mode "livesum"; a worker that
# exited stops counting at once, gunicorn.conf.py's child_exit). Sync workers serve one request
# each, so busy / (busy + idle) is how much of web's capacity requests take.
WEB_WORKERS = Gauge(
    "formation_web_workers",
    "Web's gunicorn workers by state: busy (handling a request) or idle.",
    ["state"],
    multiprocess_mode="livesum",
)

# Views for the paths ProbeMiddleware answers before URL resolution (their URL patterns' names).
PROBE_VIEWS = {"/health": "health", "/ready": "ready", "/metrics": "metrics"}
UNRESOLVED = "unresolved"


# (view, status) -> the two labelled children a request updates. labels() takes a lock and builds its
# key on each call: caching them took request_observe from about 30 to 19 microseconds (median of 5 x
# 100,000 calls, multiprocess mode, this project's shared 2-core machine). Bounded as the labels are.
_request_children: dict[tuple[str, int], tuple] = {}


def request_observe(request: HttpRequest, status: int, seconds: float) -> None:
    """Count one request answered with ``status`` after ``seconds`` under its view's name.

    The view is ``request.resolver_match.view_name`` (e.g. ``product-list``, ``admin:index``), the
    probe's name for ``/health``, ``/ready`` and ``/metrics``, else ``unresolved``: never the raw
    path, whose values a client chooses.
    """
    match = request.resolver_match
    view = match.view_name if match is not None else PROBE_VIEWS.get(request.path_info, UNRESOLVED)
    children = _request_children.get((view, status))
    if children is None:
        children = _request_children[view, status] = (
            HTTP_REQUESTS.labels(view, str(status)),
            HTTP_REQUEST_SECONDS.labels(view),
        )
    children[0].inc()
    children[1].observe(seconds)


def web_worker_busy(busy: bool, *, path: str | None = None) -> None:
    """Count this gunicorn worker as busy (handling a request for ``path``) or idle in
    ``formation_web_workers``. A request for a probe or for the metrics themselves (PROBE_VIEWS)
    leaves it idle: cheap, not load, and a scrape would otherwise always find its own worker busy."""
    busy = busy and path not in PROBE_VIEWS
    WEB_WORKERS.labels("busy").set(1 if busy else 0)
    WEB_WORKERS.labels("idle").set(0 if busy else 1)


def job_observe(*, queue: str, outcome: str | None, seconds: float) -> None:
    """Record a job of ``queue`` that took ``seconds``: ``outcome`` ``"finished"``, ``"failed"``, or
    None when it is neither or unknown (re-queued for a retry, or Redis unreachable to tell)."""
    if outcome == "finished":
        WORKER_JOBS_FINISHED.labels(queue).inc()
    elif outcome == "failed":
        WORKER_JOBS_FAILED.labels(queue).inc()
    WORKER_JOB_SECONDS.labels(queue).observe(seconds)


def send_observe(*, permanent: bool | None, sent: bool, seconds: float) -> None:
    """Record one attempt to send an outbox message: ``sent``, else failed with ``permanent``
    as mailer.engine.outbox_error_classify says (True, False, or None for unknown)."""
    result = SEND_SENT if sent else {True: SEND_PERMANENT, False: SEND_TRANSIENT, None: SEND_UNKNOWN}[permanent]
    MAILER_SENDS.labels(result).inc()
    MAILER_SEND_SECONDS.labels(result).observe(seconds)


# The collectors each process type serves besides its own metrics, by process type. The apps
# register theirs (collector_register, from their AppConfig.ready) so that this shared module never
# imports them: the direction of imports is configuration → processes → orders → mailer → core.
_COLLECTORS: dict[str, list[Callable[[], Collector]]] = {}


def collector_register(*process_types: str) -> Callable:
    """Return a decorator that registers a Collector class (or any factory of one) for ``process_types``.

    Each process of those types serves, at every scrape, a collector made by the factory once per
    registry (web's ``/metrics``, or the METRICS_PORT server of worker, scheduler and mailer).
    Registering the same factory twice for a type keeps one.
    """

    def decorate(factory: Callable[[], Collector]) -> Callable[[], Collector]:
        for process_type in process_types:
            registered = _COLLECTORS.setdefault(process_type, [])
            if factory not in registered:
                registered.append(factory)
        return factory

    return decorate


def collectors_for(process_type: str) -> list[Collector]:
    """Return a new collector of each factory registered for ``process_type`` (a list, maybe empty)."""
    return [factory() for factory in _COLLECTORS.get(process_type, ())]


@collector_register("worker")
class QueueDepthCollector(Collector):
    """``formation_queue_depth{queue}``: jobs waiting in each queue of settings.RQ_QUEUES (``LLEN``)
    at each scrape. Every worker reports the same lists: aggregate with ``max``, not ``sum``.

    Its own Redis clients answer within REDIS_CONNECT_TIMEOUT seconds per command (the queues'
    connections have no read timeout), so a paused Redis cannot pile up hung scrape threads.
    """

    def __init__(self):
        self.clients: dict[str, object] = {}

    def _queue(self, name: str):
        import redis
        import rq

        url = settings.RQ_QUEUES[name]["URL"]
        if url not in self.clients:
            self.clients[url] = redis.Redis.from_url(
                url, socket_timeout=settings.REDIS_CONNECT_TIMEOUT, **settings.REDIS_SOCKET_OPTIONS
            )
        return rq.Queue(name, connection=self.clients[url])

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from redis.exceptions import RedisError

        family = GaugeMetricFamily("formation_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"])
        try:
            for name in settings.RQ_QUEUES:
                family.add_metric([name], self._queue(name).count)
        except RedisError as exc:
            logger.warning("metrics: queue depth not read, Redis unavailable (%s)", first_line(exc))
            return
        yield family


# Connections of this database by the process type their application_name names
# ("formation/<type or instance>/…", core/postgresql/base.py), "other" for any other client, and state.
_CONNECTIONS_SQL = """
    SELECT CASE WHEN application_name LIKE 'formation/%%'
                THEN split_part(split_part(application_name, '/', 2), '.', 1) ELSE 'other' END,
           coalesce(state, 'unknown'), count(*)
    FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend'
    GROUP BY 1, 2
"""


@collector_register("web")
class DatabaseConnectionsCollector(Collector):
    """``formation_database_connections{process_type, state}``: PostgreSQL's sessions of this
    database at scrape time, by the process type their ``application_name`` names and their state
    (active, idle, idle in transaction). Behind a pooler these are the pooler's server connections,
    named after the client that used each last: what counts against ``max_connections``.
    Documented in docs/connections.md#see-who-holds-what.
    """

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from django.db import DatabaseError

        try:
            with connections["default"].cursor() as cursor:
                cursor.execute(_CONNECTIONS_SQL)
                rows = cursor.fetchall()
        except DatabaseError as exc:
            logger.warning("metrics: database connections not read, database unavailable (%s)", first_line(exc))
            return
        family = GaugeMetricFamily(
            "formation_database_connections",
            "PostgreSQL sessions of this database by process type (from application_name) and state.",
            labels=["process_type", "state"],
        )
        for process_type, state, count in rows:
            family.add_metric([process_type or "other", state], count)
        yield family


class _ProcessMetrics(Collector):
    """This process's own metrics: every gunicorn worker's (added up from PROMETHEUS_MULTIPROC_DIR,
    which gunicorn.conf.py makes and cleans) in multiprocess mode, else prometheus-client's default
    registry."""

    def __init__(self):
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.source = REGISTRY
        if directory:
            self.source = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(self.source, path=directory)

    def collect(self):
        return self.source.collect()


class ReleaseCollector(Collector):
    """``formation_release_info{release, process_type} 1``: the release this process runs
    (settings.RELEASE), Prometheus' info pattern, so a rollout shows which versions are live."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "formation_release_info",
            "The release (version, commit or image tag) that this process runs, always 1.",
            labels=["release", "process_type"],
        )
        family.add_metric([settings.RELEASE, settings.PROCESS_TYPE], 1)
        yield family


def registry_with(*collectors: Collector) -> CollectorRegistry:
    """Return a registry of this process's metrics (_ProcessMetrics), its release (ReleaseCollector)
    and ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (_ProcessMetrics(), ReleaseCollector(), *collectors):
        registry.register(collector)
    return registry


@functools.cache
def _web_registry() -> CollectorRegistry:
    # Built once per process, on the first scrape: the multiprocess directory is set by then.
    return registry_with(*collectors_for("web"))


def authorization_refusal(header: str | None) -> int | None:
    """Return 401 (no ``Authorization: Bearer`` credentials in ``header``), 403 (not METRICS_TOKEN)
    or None (the token, compared in constant time). Call only when METRICS_TOKEN is set."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return 401
    # WSGI gives header values as latin-1 text: back to their bytes, never a UnicodeError.
    if not hmac.compare_digest(credentials.strip().encode("latin-1"), settings.METRICS_TOKEN.encode()):
        return 403
    return None


REFUSALS = {
    401: ("401 Unauthorized", "Authorization: Bearer <METRICS_TOKEN> required.\n"),
    403: ("403 Forbidden", "Wrong metrics token.\n"),
}
# RFC 6750 section 3: a 401 for a bearer-protected resource names the scheme.
CHALLENGE = ("WWW-Authenticate", 'Bearer realm="metrics"')


@require_safe
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Return web's metrics in Prometheus' text format (or OpenMetrics, as the Accept header asks).

    404 while METRICS_TOKEN is unset; 401 (with ``WWW-Authenticate: Bearer``) without bearer
    credentials; 403 for a wrong token. Bodies of refusals are one plain-text line.
    """
    if not settings.METRICS_TOKEN:
        return HttpResponse("Metrics are off: set METRICS_TOKEN.\n", status=404, content_type="text/plain")
    refusal = authorization_refusal(request.headers.get("Authorization"))
    if refusal is not None:
        response = HttpResponse(REFUSALS[refusal][1], status=refusal, content_type="text/plain")
        if refusal == 401:
            response[CHALLENGE[0]] = CHALLENGE[1]
        return response
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(_web_registry()), content_type=content_type)


class _QuietHandler(WSGIRequestHandler):
    """No access line per scrape on stdout (the scraper records its own)."""

    def log_message(self, format, *args):
        pass


def _guarded(app: Callable) -> Callable:
    """Wrap the WSGI ``app``: METRICS_TOKEN when set, and this scrape thread's database
    connections closed after it (each scrape runs in a new thread; Django's are per thread)."""

    def guarded_app(environ, start_response):
        if settings.METRICS_TOKEN:
            refusal = authorization_refusal(environ.get("HTTP_AUTHORIZATION"))
            if refusal is not None:
                status, body = REFUSALS[refusal]
                headers = [("Content-Type", "text/plain; charset=utf-8")]
                if refusal == 401:
                    headers.append(CHALLENGE)
                start_response(status, headers)
                return [body.encode()]
        try:
            return app(environ, start_response)
        finally:
            connections.close_all()

    return guarded_app


_servers: list[ThreadingWSGIServer] = []


def metrics_serve(
    *, process_type: str, collectors: Iterable[Collector] = (), probes: Probes | None = None
) -> ThreadingWSGIServer | None:
    """Serve this process's metrics, the collectors registered for ``process_type`` (collector_register)
    and ``collectors`` on METRICS_ADDR:METRICS_PORT, any path, in a daemon
    thread (prometheus-client's own threaded WSGI server); return the server, or None when
    METRICS_PORT is unset or the port cannot be bound (logged as an error: the process type goes
    on doing its work without metrics rather than stopping for them).

    With ``probes`` (core.liveness.Probes), ``/health`` and ``/ready`` answer its liveness and
    readiness instead, without the token.
    """
    port = settings.METRICS_PORT
    if port is None:
        return None
    address = settings.METRICS_ADDR
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
        app = _guarded(make_wsgi_app(registry_with(*collectors_for(process_type), *collectors)))
        if probes is not None:
            app = probes.wrap(app)
        server = make_server(address, port, app, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        logger.error("%s: metrics not served, cannot listen on %s:%s (%s)", process_type, address, port, exc)
        return None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    _servers.append(server)
    logger.info("%s: metrics on http://%s:%s/metrics", process_type, address, port)
    return server


def listeners_close() -> None:
    """Close, in a forked child (RQ's work horse), the listening sockets of the servers that
    metrics_serve started in its parent: a horse outliving a parent killed by SIGKILL would
    otherwise hold METRICS_PORT, and the next worker could not serve its metrics."""
    for server in _servers:
        server.socket.close()
