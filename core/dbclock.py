"""One clock for every host: the database's.

Leases, due times and heartbeats are written by one process and compared by another, perhaps on
another host whose clock differs; comparing each against its own host's clock made two mailers,
one 90 s ahead, send the same messages twice. Times that are stored to be compared come from
PostgreSQL instead (https://www.postgresql.org/docs/15/functions-datetime.html#FUNCTIONS-DATETIME-CURRENT).
"""

from datetime import datetime

from django.db import connections


def db_now(using: str = "default") -> datetime:
    """Return the database server's current time (an aware datetime, UTC), one round trip.

    ``clock_timestamp()``, not ``now()``: inside a transaction now() stays at the transaction's
    start, while callers measure how much of a lease is left. Raises django.db.DatabaseError
    when the database cannot be reached.
    """
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]
