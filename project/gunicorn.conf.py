"""Gunicorn configuration for the ``web`` process type.

Procfile: ``web: exec gunicorn --config project/gunicorn.conf.py --bind 0.0.0.0:$PORT project.wsgi``.
On SIGTERM gunicorn closes its listeners and each worker (project.gunicorn_worker) takes the
connections waiting in the listen backlog, closes its copy (new connections are refused), serves
the requests in flight and the taken ones for up to ``graceful_timeout`` seconds, then exits 0.
SIGINT and SIGQUIT are gunicorn's quick shutdown (https://docs.gunicorn.org/en/stable/signals.html).
"""

import os
import sys

from django.core.exceptions import ImproperlyConfigured

from project.env import web_server_settings

try:
    _web = web_server_settings()
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
worker_class = "project.gunicorn_worker.DrainingSyncWorker"
keepalive = 5
accesslog = "-"
errorlog = "-"
capture_output = True
# Heartbeat files in memory, not on a possibly slow container overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
proc_name = "formation-web"
# No control socket: it is a file in $HOME that two web processes on one host would share,
# and operators manage this process type by signals and scaling, not gunicornc.
control_socket_disable = True


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
    # Imported here, once DJANGO_SETTINGS_MODULE is set; project.preflight only after django.setup().
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 - touching a setting loads the module
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.exit(1)
    import django

    django.setup(set_prefix=False)
    from project.staticfiles import manifest_problem

    if problem := manifest_problem():
        sys.stderr.write(f"configuration error: {problem}\n")
        sys.exit(1)
    from project.preflight import service_checks

    for name, check in service_checks().items():
        if problem := check():
            server.log.warning("%s unreachable (%s); serving, /ready answers 503 until it is back", name, problem)
