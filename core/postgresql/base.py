"""Django's PostgreSQL backend whose connections name their process and whose health check asks the socket.

The database ENGINE ``core.postgresql``: each connection's ``application_name`` names the process
type (or platform instance), release, pid and host (docs/connections.md#see-who-holds-what); with
CONN_HEALTH_CHECKS, a reused connection is checked before each request by a poll of its socket
instead of a ``SELECT 1`` (docs/processes.md#backing-service-faults).
"""

import os
import select
import socket

from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLDatabaseWrapper

# PostgreSQL keeps the first NAMEDATALEN - 1 bytes of an application_name.
APPLICATION_NAME_BYTES = 63


def application_name(prefix: str, *, pid: int, host: str) -> str:
    """Return ``<prefix>/<pid>@<host>`` cut to PostgreSQL's 63 bytes (the host loses its end first).

    ``prefix`` is settings' ``formation/<instance>/<release>``; the pid and host are asked at each
    connect, so a forked process (a gunicorn worker, an RQ work horse) names itself, not its parent.
    """
    name = f"{prefix}/{pid}@{host}"
    return name.encode()[:APPLICATION_NAME_BYTES].decode(errors="ignore")


class DatabaseWrapper(PostgreSQLDatabaseWrapper):
    """PostgreSQL connection whose ``is_usable`` is a non-blocking poll of its socket.

    Django's stock check is a ``SELECT 1``: one more round trip to PostgreSQL per request, a
    measurable share of a page that makes one to three queries (`make bench`). A server that ends a
    connection (``pg_terminate_backend``, a restart, ``idle_session_timeout``) writes an error
    message and closes the socket, so an idle connection whose socket has anything to read, or an end
    of file, is dead. A connection that went silent without a word (a network partition) is found by
    neither check, only by the query's own timeouts.
    """

    def get_connection_params(self) -> dict:
        """Django's connection parameters, with this process's pid and host added to an
        ``application_name`` of the form ``formation/<instance>/<release>`` (settings.DATABASES)."""
        params = super().get_connection_params()
        name = params.get("application_name") or ""
        if name.startswith("formation/") and name.count("/") == 2:
            params["application_name"] = application_name(name, pid=os.getpid(), host=socket.gethostname())
        return params

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
