"""The RQ worker class of the ``worker`` process type (settings.RQ["WORKER_CLASS"]).

RQ's work horse (the forked child that runs one job) resets SIGTERM to its default action
(rq/worker/base.py, ``setup_work_horse_signals``). RQ puts it in a process group of its own,
so honcho's signal to the worker's group does not reach it; but platforms that signal every
process of the container do (Heroku sends SIGTERM to "all processes in the dyno"; systemd's
default KillMode=control-group), and that would kill the job mid-way while the parent is doing
a warm shutdown and would wait for it. Here the horse ignores SIGTERM and SIGINT: the parent
alone decides — warm shutdown lets the job finish; a second signal (cold shutdown) makes RQ
SIGKILL the horse (``kill_horse``), and the job is recovered by the scheduler's sweep.
"""

import signal

import rq
from django.db import connections


class Worker(rq.Worker):
    """rq.Worker whose work horse ignores SIGTERM/SIGINT and closes its database connections."""

    def setup_work_horse_signals(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def perform_job(self, *args, **kwargs):
        try:
            return super().perform_job(*args, **kwargs)
        finally:
            # The horse ends with os._exit(): say goodbye to PostgreSQL instead of vanishing.
            connections.close_all()
