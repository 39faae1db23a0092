"""Hold PostgreSQL's connection slots, as another client that takes most of them does."""

import contextlib
import time
from collections.abc import Iterator

import psycopg

from core.postgresql.refusals import TOO_MANY_CLIENTS, connection_refusal
from embedded.harness import formation_database_url

# application_name of the holding connections: not the formation's (formation/<type>/…), so the
# helpers that find the formation's sessions (tests/process/support.py, app_backends) skip them.
HOLDER_NAME = "test-slot-holder"


class SlotHolder:
    """Connections of one role (``url``, default the formation's DATABASE_URL under test,
    embedded.harness.formation_database_url) that hold PostgreSQL's connection slots."""

    def __init__(self, url: str | None = None):
        self.url = url or formation_database_url()
        self.held: list[psycopg.Connection] = []

    def take_all(self, *, settle: float = 0.0) -> int:
        """Open connections until PostgreSQL refuses one (too many clients), then keep trying every
        20 ms until it has refused every attempt for ``settle`` seconds, so that slots other clients
        held for a moment (a work horse's) are taken as they free up; return how many are held.

        The count fits whatever the role is: a superuser takes the reserved superuser slots too,
        another role leaves them. Raise AssertionError past 10,000 connections, and re-raise any
        error but too many clients.
        """
        refused_since = None
        while True:
            try:
                self.held.append(
                    psycopg.connect(self.url, autocommit=True, connect_timeout=5, application_name=HOLDER_NAME)
                )
                refused_since = None
            except psycopg.OperationalError as exc:
                refusal = connection_refusal(exc)
                if refusal is None or refusal.kind != TOO_MANY_CLIENTS:
                    raise
                now = time.monotonic()
                refused_since = now if refused_since is None else refused_since
                if now - refused_since >= settle:
                    return len(self.held)
                time.sleep(0.02)
            assert len(self.held) < 10_000, "PostgreSQL accepted 10,000 connections"

    def release(self, count: int | None = None) -> None:
        """Close ``count`` of the held connections (all by default), freeing their slots."""
        count = len(self.held) if count is None else count
        for connection in self.held[:count]:
            connection.close()
        del self.held[:count]


@contextlib.contextmanager
def connection_slots_held(*, leave: int = 0, url: str | None = None) -> Iterator[SlotHolder]:
    """Hold every connection slot that the role of ``url`` can get but ``leave`` (SlotHolder.take_all);
    yield the SlotHolder, and free every slot on exit."""
    holder = SlotHolder(url)
    try:
        holder.take_all()
        holder.release(leave)
        yield holder
    finally:
        holder.release()
