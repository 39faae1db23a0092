"""Gunicorn configuration for the ``web`` process type.

Procfile: ``web: exec gunicorn --config gunicorn.conf.py --bind 0.0.0.0:$PORT project.wsgi``.
On SIGTERM gunicorn closes its listeners and each worker (processes.gunicorn_worker) takes the
connections waiting in the listen backlog, closes its copy (new connections are refused), serves
the requests in flight and the taken ones for up to ``graceful_timeout`` seconds, then exits 0.
SIGINT and SIGQUIT are gunicorn's quick shutdown (https://docs.gunicorn.org/en/stable/signals.html).
"""

import atexit
import glob
import logging
import os
import shutil
import sys
import tempfile

from django.core.exceptions import ImproperlyConfigured

from core.logs import gunicorn_logconfig, log_format
from project.env import release_version, web_server_settings

# web's log lines name their process type; settings.LOGGING reads it in each worker too.
os.environ.setdefault("PROCESS_TYPE", "web")
try:
    _web = web_server_settings()
    _log_format = log_format()
except ImproperlyConfigured as exc:
    sys.stderr.write(f"configuration error: {exc}\n")
    sys.exit(1)
bind = [f"0.0.0.0:{_web['port']}"]
workers = _web["workers"]
# Seconds. A request taking longer than `timeout` is killed; `graceful_timeout` bounds SIGTERM.
timeout = _web["timeout"]
graceful_timeout = _web["graceful_timeout"]
threads = 1
# gunicorn's sync worker that, on SIGTERM, also serves the connections waiting in the listen backlog.
worker_class = "processes.gunicorn_worker.DrainingSyncWorker"
keepalive = 5
accesslog = "-"
errorlog = "-"
# LOG_FORMAT=json: the error and access lines as JSON on stdout like every other line (core/logs.py);
# text: gunicorn's own lines. The access line's request id is the response's X-Request-ID header.
logconfig_dict = gunicorn_logconfig(_log_format, os.environ["PROCESS_TYPE"], release_version())
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'
capture_output = True
# Heartbeat files in memory, not on a possibly slow container overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
proc_name = "formation-web"
# No control socket: it is a file in $HOME that two web processes on one host would share,
# and operators manage this process type by signals and scaling, not gunicornc.
control_socket_disable = True


def _remove_orphaned_metrics_directories() -> None:
    """Remove the multiprocess directories of arbiters that are gone without their atexit (SIGKILL):
    each is named after its arbiter's pid, and one whose pid no process has is an orphan."""
    for path in glob.glob(os.path.join(worker_tmp_dir or tempfile.gettempdir(), "formation-metrics-*-*")):
        pid = os.path.basename(path).split("-")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # a live process of another user


# The multiprocess directory this arbiter made for itself, if any: removed when it exits (atexit,
# or on_exit when it skips the interpreter's teardown).
_own_metrics_directory: list[str] = []


def _remove_own_metrics_directory() -> None:
    for directory in _own_metrics_directory:
        shutil.rmtree(directory, ignore_errors=True)


def _exit_now() -> None:
    """Flush logging and the standard streams, then end this process with status 0 at once."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _metrics_directory(server) -> None:
    """Give the workers a PROMETHEUS_MULTIPROC_DIR before anything imports prometheus-client.

    prometheus-client picks its multiprocess mode from that variable when first imported
    (prometheus_client/values.py), so it is set here, in the arbiter, before django.setup() and
    the forks. Unset: a directory of this arbiter's own, in memory when /dev/shm exists, removed
    when the arbiter exits (atexit; workers inherit the hook but skip it), or by the next web on
    this host after a SIGKILL (_remove_orphaned_metrics_directories). Set by the operator:
    created if missing, and the files a previous run left (``*.db``) removed, as prometheus-client
    asks ("wiped between Gunicorn runs"); nothing else in it is touched. One directory per web
    process: a second gunicorn given the same one would wipe the first's.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)
    else:
        _remove_orphaned_metrics_directories()
        arbiter = os.getpid()
        directory = tempfile.mkdtemp(prefix=f"formation-metrics-{arbiter}-", dir=worker_tmp_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        _own_metrics_directory.append(directory)
        atexit.register(lambda: os.getpid() == arbiter and _remove_own_metrics_directory())
    server.log.info("metrics: multiprocess directory %s", directory)


def on_starting(server):
    """Load the settings once in the arbiter, so a configuration error is one line and exit 1.

    Static files not collected (DEBUG off and no manifest in STATIC_ROOT) are such an error too:
    every page links its stylesheet through the manifest, so web would answer 500 to every page.

    Unreachable backing services do not stop web: it starts, answers /health, and /ready says
    503 naming the service until it is back (orchestrators route no traffic meanwhile). One
    warning line per unreachable service says so at start; each check is bounded by the
    connect timeouts, so the start never hangs.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # Imported here, once DJANGO_SETTINGS_MODULE is set; core.preflight only after django.setup().
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 - touching a setting loads the module
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.exit(1)
    _metrics_directory(server)
    import django

    django.setup(set_prefix=False)
    from processes.staticfiles import manifest_problem

    if problem := manifest_problem():
        sys.stderr.write(f"configuration error: {problem}\n")
        sys.exit(1)
    from core.preflight import service_checks

    for name, check in service_checks().items():
        if problem := check():
            server.log.warning("%s unreachable (%s); serving, /ready answers 503 until it is back", name, problem)


# This worker's registration of its release in Redis (core.releases), deleted at a clean exit.
_registration = []


def post_worker_init(worker):
    """Register the worker's release in Redis (core.releases) once its app is loaded: the post-deploy
    step sees a web of another release even while it holds no database session. Count the worker
    as idle (core.metrics.web_worker_busy) from now on."""
    from core.metrics import web_worker_busy
    from core.releases import release_register

    _registration.append(release_register(process_type="web"))
    web_worker_busy(False)


def pre_request(worker, req):
    """Count the worker as busy from the moment it has read a request's line and headers (its
    time reading a slow client's headers is not counted: a buffering proxy or load balancer in
    front takes that). gunicorn's own hook logged the request at debug level: kept."""
    from core.metrics import web_worker_busy

    worker.log.debug("%s %s", req.method, req.path)
    web_worker_busy(True, path=req.path)


def post_request(worker, req, environ, resp):
    """Count the worker as idle again once the response is sent (gunicorn calls this in a
    ``finally``: after an error too)."""
    from core.metrics import web_worker_busy

    web_worker_busy(False)


def child_exit(server, worker):
    """Drop the live-gauge files of a worker that exited (prometheus-client's multiprocess rule);
    its counters and histograms stay, so totals never go back."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """End a worker that stopped cleanly at once, skipping the interpreter's teardown.

    After a graceful stop the worker has served everything; what remains is Python's finalization
    of a process that holds all of Django (module teardown, garbage collection), about 0.4 s of an
    idle worker's SIGTERM → exit on this project's 2-core machine, where bare gunicorn needs a few
    milliseconds (measured by `make bench`). Only for a clean exit, a SystemExit(0) on its way out of the
    worker (gunicorn's Arbiter.spawn_worker calls this hook in its ``finally``): a boot or load
    error keeps its status and the normal path. Database connections are closed first (PostgreSQL
    sees a normal disconnection), then logging and the standard streams are flushed.
    """
    exc = sys.exc_info()[1]
    if not isinstance(exc, SystemExit) or exc.code not in (0, None):
        return
    from django.db import connections

    connections.close_all()
    for registration in _registration:  # its atexit will not run: the worker ends with os._exit
        registration.stop()
    _exit_now()


def on_exit(server):
    """End the arbiter at once after a clean stop, skipping the interpreter's teardown.

    The arbiter loaded Django (on_starting), so Python's finalization takes about 0.3 s of an idle
    web's SIGTERM → exit on this project's machine (measured by `make bench`), after every worker has
    exited. gunicorn calls this hook only from ``Arbiter.halt(reason, exit_status)``, right before
    ``sys.exit(exit_status)``; the status is read from that call, and anything but 0 (or a gunicorn
    that no longer passes it so) takes the normal path. The arbiter's own metrics directory is
    removed first (its atexit hook would not run), then logging and the standard streams flushed.
    """
    caller = sys._getframe(1)
    if caller.f_code.co_name != "halt" or caller.f_locals.get("exit_status") != 0:
        return
    _remove_own_metrics_directory()
    _exit_now()
