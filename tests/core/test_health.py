"""/health is liveness (no backing service touched); /ready is readiness (503 naming what failed)."""

import socket

import django_rq
import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core.queues import DEFAULT_QUEUE, MAINTENANCE_QUEUE, redis_connection
from tests.support.databases import ALL_DATABASES
from tests.support.stages import APP, INITIAL, NOTE, SIZE


def test_health_touches_no_backing_service(client, settings):
    # No django_db mark: pytest-django makes any database access an error in this test. Redis
    # points at a listener that counts connections: a refused port would let a /health that
    # tried Redis and ignored the error pass.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0)
        port = listener.getsockname()[1]
        settings.RQ_QUEUES = {
            DEFAULT_QUEUE: {"URL": f"redis://127.0.0.1:{port}/0?socket_connect_timeout=0.2&socket_timeout=0.5"}
        }
        response = client.get("/health")
        with pytest.raises(BlockingIOError):  # nothing connected
            listener.accept()
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_when_everything_answers(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


@pytest.mark.django_db
def test_not_ready_without_redis_names_it(client, settings):
    settings.RQ_QUEUES = {DEFAULT_QUEUE: {"URL": "redis://127.0.0.1:9/0?socket_connect_timeout=0.5"}}
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert "ConnectionError" in body["checks"]["redis"]


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
def test_not_ready_with_an_unapplied_migration_names_it():
    call_command("migrate", "mailer", "0001", verbosity=0)
    try:
        response = Client().get("/ready")
        assert response.status_code == 503
        assert "mailer.0002_heartbeat" in response.json()["checks"]["database"]
    finally:
        call_command("migrate", "mailer", verbosity=0)
    assert Client().get("/ready").status_code == 200


@pytest.mark.django_db
def test_ready_while_only_a_contract_migration_waits_for_the_post_deploy_step(client, stages_app):
    stages_app("marked")
    for name in (INITIAL, NOTE):
        MigrationRecorder(connection).record_applied(APP, name)
    response = client.get("/ready")
    assert response.status_code == 200, response.json()


@pytest.mark.django_db
def test_not_ready_while_an_expand_migration_waits_naming_it_and_not_the_contract_one(client, stages_app):
    stages_app("marked")
    MigrationRecorder(connection).record_applied(APP, INITIAL)
    response = client.get("/ready")
    assert response.status_code == 503
    # 0003 (contract) and 0004 (after it) wait for the post-deploy step: not counted.
    assert response.json()["checks"]["database"] == "1 unapplied migration(s), first stages_app.0002_shelf_note"


@pytest.mark.django_db
def test_not_ready_while_an_expand_migration_after_an_applied_contract_one_waits(client, stages_app):
    stages_app("marked")
    for name in (INITIAL, NOTE, SIZE):  # the post-deploy step of an earlier release applied 0003
        MigrationRecorder(connection).record_applied(APP, name)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "1 unapplied migration(s), first stages_app.0004_shelf_colour"


def test_probes_answer_get_only(client):
    assert client.post("/health").status_code == 405


# Host headers that are not the shop's domain, as probes send them: a kubelet HTTP probe sends the
# pod IP and port; IPv6 pods send a bracketed literal; anything else must not matter either.
FOREIGN_HOSTS = ["10.42.8.201:8000", "[fd00:10:42::8]:8000", "[::1]", "garbage host!", "shop.example.com.evil:80"]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
@pytest.mark.parametrize("method", ["get", "head"])
def test_health_answers_whatever_the_host_header(client, settings, host, method):
    settings.ALLOWED_HOSTS = ["shop.example.com"]
    response = getattr(client, method)("/health", HTTP_HOST=host)
    assert response.status_code == 200
    if method == "get":
        assert response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_ready_answers_whatever_the_host_header(client, settings, host):
    settings.ALLOWED_HOSTS = ["shop.example.com"]
    response = client.get("/ready", HTTP_HOST=host)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    settings.RQ_QUEUES = {DEFAULT_QUEUE: {"URL": "redis://127.0.0.1:9/0?socket_connect_timeout=0.5"}}
    response = client.get("/ready", HTTP_HOST=host)
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/checkout/", "/admin/login/", "/health/", "/healthz"])
def test_every_other_page_keeps_host_validation(client, settings, path):
    settings.ALLOWED_HOSTS = ["shop.example.com"]
    assert client.get(path, HTTP_HOST="10.42.8.201:8000").status_code == 400


def test_other_methods_on_the_probes_keep_host_validation(client, settings):
    settings.ALLOWED_HOSTS = ["shop.example.com"]
    assert client.post("/health", HTTP_HOST="10.42.8.201:8000").status_code == 400
    assert client.post("/health", HTTP_HOST="shop.example.com").status_code == 405


def _redis_connections_received() -> int:
    return django_rq.get_connection(DEFAULT_QUEUE).info("stats")["total_connections_received"]


@pytest.mark.django_db
def test_ready_reuses_one_redis_connection_and_makes_two_queries(client):
    # A probe every few seconds per pod must not open a Redis connection each time (nor rebuild
    # the migration graph: two queries, whether PostgreSQL takes writes and the applied migrations).
    client.get("/ready")
    before = _redis_connections_received()
    for _ in range(5):
        with CaptureQueriesContext(connections["default"]) as queries:
            assert client.get("/ready").status_code == 200
        sqls = [query["sql"] for query in queries]
        assert len(sqls) == 2
        assert "pg_is_in_recovery()" in sqls[0]
        assert '"django_migrations"' in sqls[1]
    # The counting connection itself is one.
    assert _redis_connections_received() - before <= 1


def test_one_redis_client_per_connection_setting(settings):
    assert redis_connection(DEFAULT_QUEUE) is redis_connection(DEFAULT_QUEUE)
    assert redis_connection(DEFAULT_QUEUE) is redis_connection(MAINTENANCE_QUEUE)  # same URL
    first = redis_connection(DEFAULT_QUEUE)
    settings.RQ_QUEUES = {DEFAULT_QUEUE: {"URL": "redis://127.0.0.1:9/0"}}
    assert redis_connection(DEFAULT_QUEUE) is not first
