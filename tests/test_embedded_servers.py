"""The embedded servers keep the port they first got and listen there again while it is free, so
saved ``psql`` and GUI connections keep working; Redis is the same major version as the
deployments pin (docker-compose.yml, the Kubernetes ConfigMap); the app connects to the embedded
PostgreSQL as its own role, not the operator's superuser."""

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from django.db import connection

from embedded.polling import wait_until
from embedded.servers import (
    PgBouncer,
    Postgres,
    Redis,
    ServerError,
    SmtpSink,
    pid_alive,
    port_free,
    port_open,
    redis_server_binary,
)
from processes.parity import K8S_ANNOTATION, K8S_CONFIGMAP, major

ROOT = Path(__file__).resolve().parent.parent
SERVERS = pytest.mark.parametrize("kind", [Postgres, Redis, SmtpSink, PgBouncer], ids=lambda kind: kind.name)
# What a PgBouncer under test pools: nothing needs to listen there for it to start.
UPSTREAM = "postgres://formation@127.0.0.1:5/formation"


@pytest.fixture
def server_root():
    """A fresh profile folder under .formation/ (the embedded PostgreSQL, run as its own user
    when the tests run as root, can reach it there); removed afterwards."""
    root = ROOT / ".formation" / f"ports-{uuid.uuid4().hex[:8]}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def start(kind, root: Path):
    options = {SmtpSink: {"echo": False}, PgBouncer: {"database_url": UPSTREAM}}.get(kind, {})
    server = kind(root, durable=False, **options)
    server.ensure()
    assert server.started_here and port_open(server.port)
    return server


def stop(server) -> int:
    server.stop()
    wait_until(lambda: port_free(server.port), deadline=10, message=f"{server.name} to free its port")
    return server.port


@SERVERS
def test_a_server_listens_on_its_first_port_again_after_a_restart(kind, server_root):
    first = stop(start(kind, server_root))
    second = start(kind, server_root)
    try:
        assert second.port == first
    finally:
        second.stop()
    assert server_root.joinpath(f"{kind.name}.port").read_text().strip() == str(first)


@SERVERS
def test_a_taken_port_is_replaced_by_a_new_one_that_is_saved(kind, server_root):
    first = stop(start(kind, server_root))
    with socket.socket() as squatter:
        # SO_REUSEADDR, as a server sets it: the stopped server's connections may linger in TIME_WAIT.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", first))
        squatter.listen()
        second = start(kind, server_root)
        try:
            assert second.port != first
            assert server_root.joinpath(f"{kind.name}.port").read_text().strip() == str(second.port)
        finally:
            stop(second)
    third = start(kind, server_root)  # the new port is the one kept from now on
    try:
        assert third.port == second.port
    finally:
        third.stop()


def test_embedded_redis_is_the_major_version_the_deployments_pin():
    version = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
    here = version.split("v=")[1].split()[0]  # "Redis server v=8.2.3 sha=…"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["image"]
    configmap = yaml.safe_load((ROOT / K8S_CONFIGMAP).read_text())
    pinned = configmap["metadata"]["annotations"][K8S_ANNOTATION.format("redis")]
    assert compose == "redis:8.2"
    assert pinned == "8.2"
    assert major(here) == major(pinned) == "8", here


def app_role(url: str) -> tuple[str, bool, str, set[str]]:
    """Return, for a connection to ``url``: its role, whether that is a superuser, the database's
    owner, and the roles it is a member of."""
    with psycopg.connect(url) as app:
        return app.execute(
            "SELECT r.rolname, r.rolsuper, pg_get_userbyid(d.datdba),"
            " ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid)"
            " FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()"
        ).fetchone()


def test_the_app_connects_as_its_own_role_not_a_superuser_and_the_operator_keeps_postgres(server_root):
    server = start(Postgres, server_root)
    try:
        url = server.url()  # a second time: nothing to create, nothing fails
        assert url == f"postgres://formation@127.0.0.1:{server.port}/formation"
        role, superuser, owner, member_of = app_role(url)
        assert (role, superuser, owner) == ("formation", False, "formation")
        assert {"pg_signal_backend", "pg_read_all_stats"} <= set(member_of)
        assert app_role(url.replace("formation@", "postgres@"))[:2] == ("postgres", True)
    finally:
        server.stop()


def test_a_data_folder_from_before_the_app_role_is_handed_over_to_it(server_root):
    server = start(Postgres, server_root)
    operator = f"postgres://postgres@127.0.0.1:{server.port}"
    try:
        # What a data folder made when the app connected as postgres holds: its database and tables.
        with psycopg.connect(f"{operator}/postgres", autocommit=True) as conn:
            conn.execute("ALTER DATABASE formation OWNER TO postgres")
        with psycopg.connect(f"{operator}/formation", autocommit=True) as conn:
            conn.execute("CREATE TABLE shelf (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)")
            conn.execute("CREATE TABLE bin (id serial PRIMARY KEY)")
            conn.execute("CREATE SEQUENCE ticket")
            conn.execute("CREATE VIEW shelves AS SELECT * FROM shelf")
        url = server.url()
        assert app_role(url)[2] == "formation"
        with psycopg.connect(url, autocommit=True) as app:
            owners = app.execute(
                "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            ).fetchall()
            assert owners == [("formation",)]
            # What migrations do to them.
            app.execute("ALTER TABLE shelf ADD COLUMN label text")
            app.execute("INSERT INTO bin DEFAULT VALUES")
            app.execute("SELECT nextval('ticket')")
            app.execute("DROP VIEW shelves")
    finally:
        server.stop()


@pytest.mark.skipif(
    "DATABASE_URL" not in os.environ.get("EMBEDDED_URLS", "").split(","),
    reason="DATABASE_URL is yours (not the embedded server's): so is its role",
)
@pytest.mark.django_db
def test_the_suite_connects_to_the_embedded_postgresql_as_the_app_role_not_a_superuser():
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == ("formation", False)


def test_the_pooled_url_is_database_urls_role_password_and_database_on_the_poolers_port(tmp_path):
    bouncer = PgBouncer(tmp_path, durable=False, database_url="postgres://shop:s%40cret@db.example:6543/orders")
    bouncer.port = 6432
    assert bouncer.url() == "postgres://shop:s%40cret@127.0.0.1:6432/orders"
    settings = bouncer.settings(6432).splitlines()
    # Any database name (pytest-django's test_orders too) passes through to DATABASE_URL's server.
    assert "* = host=db.example port=6543" in settings
    assert {"pool_mode = transaction", "auth_type = trust", "listen_addr = 127.0.0.1", "unix_socket_dir ="} <= set(
        settings
    )
    assert not [line for line in settings if line.startswith("ignore_startup_parameters")]


def test_a_pgbouncer_left_running_is_reused_for_the_same_database_url_and_replaced_for_another(server_root):
    left = start(PgBouncer, server_root)
    again = PgBouncer(server_root, durable=False, database_url=UPSTREAM)
    assert again.ensure() == left.url()
    assert (again.started_here, again.pid) == (False, left.pid)
    other = PgBouncer(server_root, durable=False, database_url=UPSTREAM.replace(":5/", ":6/"))
    try:
        other.ensure()
        assert other.started_here and other.pid != left.pid
        assert not pid_alive(left.pid)
        assert "* = host=127.0.0.1 port=6" in other.config.read_text().splitlines()
    finally:
        other.stop()
        left.stop()


def test_without_pgbouncer_or_apt_get_the_pooler_fails_with_one_line_saying_what_to_install(tmp_path, monkeypatch):
    if os.access("/usr/sbin/pgbouncer", os.X_OK):
        pytest.skip("/usr/sbin/pgbouncer is installed here")
    monkeypatch.setenv("PATH", str(tmp_path))  # neither pgbouncer nor apt-get on it
    bouncer = PgBouncer(tmp_path / "test", durable=False, database_url=UPSTREAM, install_root=tmp_path)
    with pytest.raises(ServerError) as failure:
        bouncer.ensure()
    assert str(failure.value).splitlines() == [
        "PgBouncer is not installed (no pgbouncer on PATH, no /usr/sbin/pgbouncer) and this machine has no "
        "apt-get to fetch Debian's package: install pgbouncer"
    ]
