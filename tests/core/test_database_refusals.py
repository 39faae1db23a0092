"""PostgreSQL refusing a new connection is told apart from every other database error, against the
real server; its log lines come once per interval per kind; backoff waits follow full jitter."""

import logging
import uuid

import psycopg
import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test import Client

from core.backoff import Backoff, full_jitter
from core.postgresql.refusals import (
    DISK_FULL,
    NOT_ACCEPTING,
    READ_ONLY,
    TOO_MANY_CLIENTS,
    UNREACHABLE,
    Refusal,
    RefusalLog,
    connection_refusal,
)
from embedded.harness import formation_database_url
from embedded.servers import free_port
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.slots import connection_slots_held


def _connect_error(**overrides) -> OperationalError:
    """Return the error Django raises when it opens a new connection of ``default`` with
    ``overrides`` of its settings (a wrapper of its own: the test's connection is left alone)."""
    wrapper = connections.create_connection("default")
    wrapper.settings_dict = {**wrapper.settings_dict, **overrides}
    with pytest.raises(OperationalError) as raised:
        wrapper.ensure_connection()
    return raised.value


@pytest.mark.django_db
def test_nothing_listening_is_a_refusal_unreachable():
    refusal = connection_refusal(_connect_error(PORT=str(free_port())))
    assert refusal is not None
    assert (refusal.kind, refusal.detail) == (UNREACHABLE, "Connection refused")


@pytest.mark.django_db(transaction=True)
def test_a_role_or_database_over_its_connection_limit_is_a_refusal_too_many_clients():
    # A CONNECTION LIMIT, as a shared plan may cap a tenant. PostgreSQL enforces a database's limit
    # on every role but a superuser; the shop's own role (the embedded default) may create databases,
    # not roles, and a superuser (a DATABASE_URL of yours) is held to a role's limit only.
    name = f"limited_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        [superuser] = cursor.fetchone()
        kind, create, drop = (
            ("role", f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 0", f"DROP ROLE {name}")
            if superuser
            else ("database", f"CREATE DATABASE {name} CONNECTION LIMIT 0", f"DROP DATABASE {name}")
        )
        cursor.execute(create)
    try:
        overrides = {"USER": name, "PASSWORD": ""} if kind == "role" else {"NAME": name}
        refusal = connection_refusal(_connect_error(**overrides))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(drop)
    assert refusal == Refusal(kind=TOO_MANY_CLIENTS, detail=f'FATAL: too many connections for {kind} "{name}"')


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
def test_every_slot_taken_is_a_refusal_too_many_clients_and_web_answers_503_with_retry_after(settings):
    settings.DEBUG = False
    factories.product()
    connection.close()  # the request below must open its own, as a web worker without one does
    with connection_slots_held(leave=0):
        refusal = connection_refusal(_connect_error())
        response = Client(raise_request_exception=False).get("/")
    assert refusal is not None and refusal.kind == TOO_MANY_CLIENTS
    assert "too many clients" in refusal.detail or "reserved" in refusal.detail
    assert response.status_code == 503
    assert response["Retry-After"] == "5"


@pytest.mark.django_db
def test_an_unknown_database_is_not_a_refusal():
    assert connection_refusal(_connect_error(NAME=f"missing_{uuid.uuid4().hex[:8]}")) is None


@pytest.mark.django_db
def test_a_statement_timeout_inside_a_transaction_is_not_a_refusal():
    with pytest.raises(OperationalError) as raised, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 50")
        cursor.execute("SELECT pg_sleep(2)")
    assert connection_refusal(raised.value) is None


def test_a_session_ended_by_the_server_is_not_a_refusal():
    with psycopg.connect(formation_database_url(), autocommit=True) as victim:
        with psycopg.connect(formation_database_url(), autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [victim.info.backend_pid])
        with pytest.raises(psycopg.OperationalError) as raised:
            victim.execute("SELECT 1")
    assert connection_refusal(raised.value) is None


def test_errors_other_than_the_databases_are_not_refusals():
    assert connection_refusal(ValueError("connection refused")) is None


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_logged_once_per_interval_per_kind_with_how_many_jobs_waited(caplog):
    clock = _Clock()
    log = RefusalLog(logging.getLogger("test.refusals"), interval=10, clock=clock)
    too_many = Refusal(kind=TOO_MANY_CLIENTS, detail="FATAL: sorry, too many clients already")
    with caplog.at_level(logging.INFO, logger="test.refusals"):
        for _ in range(37):  # 37 jobs over 12 s
            log.record(too_many, wait=2.5)
            clock.now += 12 / 37
        log.record(Refusal(kind=NOT_ACCEPTING, detail="FATAL: the database system is starting up"), wait=1)
        log.accepted()
        log.accepted()  # nothing refused since: no line
    lines = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert lines == [
        (
            "WARNING",
            "PostgreSQL refused connections (too many clients: FATAL: sorry, too many clients already): "
            "1 job put back just now, unrun and with no retry spent; next try in 2.5 s",
        ),
        (
            "WARNING",
            "PostgreSQL refused connections (too many clients: FATAL: sorry, too many clients already): "
            "31 jobs put back in the last 10 s, unrun and with no retry spent; next try in 2.5 s",
        ),
        (
            "WARNING",
            "PostgreSQL refused connections (not accepting connections: FATAL: the database system is "
            "starting up): 1 job put back just now, unrun and with no retry spent; next try in 1.0 s",
        ),
        ("INFO", "PostgreSQL accepts connections again: 38 jobs put back over the last 12 s"),
    ]


def test_refused_writes_are_not_called_refused_connections(caplog):
    log = RefusalLog(logging.getLogger("test.refusals"), interval=10, clock=_Clock())
    with caplog.at_level(logging.INFO, logger="test.refusals"):
        log.record(Refusal(kind=READ_ONLY, detail="cannot execute UPDATE in a read-only transaction"), wait=1)
        log.record(Refusal(kind=DISK_FULL, detail="could not extend file: No space left on device"), wait=2)
        log.accepted()
        log.record(Refusal(kind=UNREACHABLE, detail="Connection refused"), wait=1)
        log.record(Refusal(kind=READ_ONLY, detail="cannot execute INSERT in a read-only transaction"), wait=1)
        log.accepted()
    assert [record.getMessage() for record in caplog.records] == [
        "PostgreSQL refused writes (read-only: cannot execute UPDATE in a read-only transaction): "
        "1 job put back just now, unrun and with no retry spent; next try in 1.0 s",
        "PostgreSQL refused writes (disk full: could not extend file: No space left on device): "
        "1 job put back just now, unrun and with no retry spent; next try in 2.0 s",
        "PostgreSQL accepts writes again: 2 jobs put back over the last 0 s",
        "PostgreSQL refused connections (unreachable: Connection refused): "
        "1 job put back just now, unrun and with no retry spent; next try in 1.0 s",
        "PostgreSQL refused writes (read-only: cannot execute INSERT in a read-only transaction): "
        "1 job put back just now, unrun and with no retry spent; next try in 1.0 s",
        "PostgreSQL accepts connections and writes again: 2 jobs put back over the last 0 s",
    ]


def test_full_jitter_waits_up_to_base_doubling_to_the_cap():
    highest = [full_jitter(attempt=n, base=1, cap=60, uniform=lambda low, high: high) for n in range(9)]
    assert highest == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert full_jitter(attempt=1000, base=1, cap=60, uniform=lambda low, high: high) == 60
    assert all(0 <= full_jitter(attempt=n, base=1, cap=60) <= min(60, 2**n) for n in range(20) for _ in range(50))
    with pytest.raises(ValueError):
        full_jitter(attempt=-1, base=1, cap=60)


def test_a_backoff_starts_again_after_a_reset():
    backoff = Backoff(base=1, cap=60, uniform=lambda low, high: high)
    assert [backoff.next_wait() for _ in range(3)] == [1, 2, 4]
    backoff.reset()
    assert backoff.next_wait() == 1
