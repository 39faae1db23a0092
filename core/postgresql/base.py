"""Django's PostgreSQL backend whose connection health check asks the socket, not the server.

The database ENGINE ``core.postgresql``: with CONN_HEALTH_CHECKS, a reused connection is checked
before each request by a poll of its socket instead of a ``SELECT 1``. Documented in
docs/processes.md#backing-service-faults.
"""

import select

from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper


class DatabaseWrapper(PostgreSQLDatabaseWrapper):
    """PostgreSQL connection whose ``is_usable`` is a non-blocking poll of its socket.

    Django's stock check is a ``SELECT 1``: one more round trip to PostgreSQL per request, a
    measurable share of a page that makes one to three queries (`make bench`). A server that ends a
    connection (``pg_terminate_backend``, a restart, ``idle_session_timeout``) writes an error
    message and closes the socket, so an idle connection whose socket has anything to read, or an end
    of file, is dead. A connection that went silent without a word (a network partition) is found by
    neither check, only by the query's own timeouts.
    """

    def is_usable(self) -> bool:
        """Return False when the connection is closed, broken, or the server has written to (or
        closed) its idle socket; True otherwise. No query is sent."""
        if self.connection is None or self.connection.closed or self.connection.broken:
            return False
        try:
            readable, _, failed = select.select([self.connection.fileno()], [], [self.connection.fileno()], 0)
        except (OSError, ValueError):
            return False
        return not readable and not failed
