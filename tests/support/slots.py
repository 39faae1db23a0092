"""Hold PostgreSQL's connection slots, as another client that takes most of them does."""

import contextlib
from collections.abc import Iterator

import psycopg

from core.postgresql.refusals import TOO_MANY_CLIENTS, connection_refusal
from embedded.harness import formation_database_url

# application_name of the holding connections: not the formation's (formation/<type>/…), so the
# helpers that find the formation's sessions (tests/process/support.py, app_backends) skip them.
HOLDER_NAME = "test-slot-holder"


@contextlib.contextmanager
def connection_slots_held(*, leave: int = 0, url: str | None = None) -> Iterator[list[psycopg.Connection]]:
    """Hold every connection slot that the role of ``url`` can get but ``leave``; yield the held
    connections (a list; closing some frees slots) and close the rest on exit.

    ``url`` defaults to the formation's DATABASE_URL under test (embedded.harness.formation_database_url).
    Connections are opened as that role until PostgreSQL refuses one (too many clients), so the
    count fits whatever the role is: a superuser takes the reserved superuser slots too, another
    role leaves them. Raise AssertionError if PostgreSQL never refuses within 10,000 connections,
    and re-raise any error but too many clients.
    """
    url = url or formation_database_url()
    held: list[psycopg.Connection] = []
    try:
        while True:
            try:
                held.append(psycopg.connect(url, autocommit=True, connect_timeout=5, application_name=HOLDER_NAME))
            except psycopg.OperationalError as exc:
                refusal = connection_refusal(exc)
                if refusal is None or refusal.kind != TOO_MANY_CLIENTS:
                    raise
                break
            assert len(held) < 10_000, "PostgreSQL accepted 10,000 connections"
        for connection in held[:leave]:
            connection.close()
        del held[:leave]
        yield held
    finally:
        for connection in held:
            connection.close()
