"""Every PostgreSQL connection of the app carries TCP keepalives and tcp_user_timeout, read back
from the kernel's socket options, so a connection that goes silent without being closed ends
within DATABASE_SILENCE_TIMEOUT seconds instead of hanging (project.env.keepalive_options)."""

import os
import socket

import pytest
from django.conf import settings
from django.db import connections

from project.env import keepalive_options
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


@pytest.mark.parametrize("alias", ALL_DATABASES)
def test_every_database_connection_has_keepalives_and_a_user_timeout(alias):
    connection = connections[alias]
    connection.ensure_connection()
    sock = socket.socket(fileno=os.dup(connection.connection.pgconn.socket))
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            pytest.skip(f"{alias} connects through a unix socket, where TCP keepalives do not apply")
        expected = keepalive_options(settings.DATABASE_SILENCE_TIMEOUT)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == expected["keepalives_idle"]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == expected["keepalives_interval"]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == expected["keepalives_count"]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == expected["tcp_user_timeout"]
    finally:
        sock.close()


@pytest.mark.parametrize("bound", [4, 5, 15, 60, 600])
def test_the_keepalive_probes_end_a_silent_connection_within_the_bound(bound):
    options = keepalive_options(bound)
    detected = options["keepalives_idle"] + options["keepalives_interval"] * options["keepalives_count"]
    assert detected <= bound
    assert options["tcp_user_timeout"] == bound * 1000


def _redis_socket(client):
    client.ping()
    connection = client.connection_pool.get_connection()
    try:
        return socket.socket(fileno=os.dup(connection._sock.fileno()))
    finally:
        client.connection_pool.release(connection)


def _redis_clients():
    import django_rq

    from core import queues
    from processes.scheduler import Scheduler
    from processes.worker import Worker

    yield "queues", queues.redis_connection()
    yield (
        "worker",
        Worker([django_rq.get_queue(queues.DEFAULT_QUEUE)], connection=django_rq.get_connection()).connection,
    )
    yield "scheduler", Scheduler(queue_name=queues.MAINTENANCE_QUEUE, connection=django_rq.get_connection()).connection


def test_every_redis_client_has_keepalives():
    """The queues' client, the worker's (and so its horses') and the scheduler's: TCP keepalives
    of REDIS_SILENCE_TIMEOUT, not redis-py's defaults (30 s idle) or the kernel's (7200 s)."""
    for name, client in _redis_clients():
        sock = _redis_socket(client)
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                pytest.skip(f"Redis through a unix socket: TCP keepalives do not apply ({name})")
            expected = settings.REDIS_SOCKET_OPTIONS["socket_keepalive_options"]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1, name
            for option, value in expected.items():
                assert sock.getsockopt(socket.IPPROTO_TCP, option) == value, name
        finally:
            sock.close()
