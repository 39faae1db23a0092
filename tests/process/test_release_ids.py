"""Processes of the formation name the release they run (RELEASE_VERSION), where the post-deploy
step looks for processes of another release (processes.stages.other_releases): the worker in its RQ
worker name, web in the application_name of its PostgreSQL sessions. Their log lines and metrics:
tests/process/test_logs.py, tests/process/test_metrics.py."""

import socket
import urllib.request

import psutil
import pytest
from django.db import connection

from core.queues import redis_connection
from processes.worker import Worker, worker_release

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

RELEASE = "v-ids-7"


def test_a_worker_registers_a_name_ending_in_its_release(formation):
    formation.start("worker", RELEASE_VERSION=RELEASE)
    [worker] = Worker.all(connection=redis_connection())
    assert worker.name.endswith(f".{RELEASE}")
    assert worker_release(worker.name) == RELEASE


def test_webs_database_sessions_are_named_after_its_type_and_release(formation):
    web = formation.start("web", RELEASE_VERSION=RELEASE)
    with urllib.request.urlopen(f"http://127.0.0.1:{web.env['PORT']}/ready", timeout=10) as response:
        assert response.status == 200  # its gunicorn worker asked PostgreSQL, and keeps the session (CONN_MAX_AGE)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'formation/web/%%'"
        )
        names = [row[0] for row in cursor.fetchall()]
    # formation/<type>/<release>/<pid>@<host>: the pid of the gunicorn worker that holds it, not the master's.
    workers = {child.pid for child in psutil.Process(web.popen.pid).children(recursive=True)}
    assert names
    assert set(names) <= {f"formation/web/{RELEASE}/{pid}@{socket.gethostname()}"[:63] for pid in workers}
