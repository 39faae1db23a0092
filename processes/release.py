"""The release phase's guards around Django's migrations: one release at a time, short lock waits.

Used by the ``migrate`` command that the Procfile's ``release:`` line runs. release_session holds a
PostgreSQL advisory lock, so releases never overlap, and bounds the session's lock waits;
migrations_run retries a migration rolled back on a lock wait and, when the retries run out, names
the session blocking it. Documented in docs/releases.md#one-release-at-a-time and
docs/releases.md#short-lock-waits.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("release")

# The advisory lock key of the release phase: b"formatio" read as a big-endian bigint, fixed so
# every release of every version agrees on it. Advisory locks are per database, so releases of
# different databases on one server do not wait for each other.
RELEASE_LOCK_KEY = int.from_bytes(b"formatio", "big")
# Seconds: the pause between retries doubles from MIGRATION_RETRY_DELAY up to this.
MAX_RETRY_DELAY = 30.0
# SQLSTATEs of lock contention after which PostgreSQL has rolled the transaction back, so a retry
# is safe: lock_not_available (lock_timeout ran out) and deadlock_detected (Appendix A).
LOCK_CONTENTION = {"55P03", "40P01"}

_SESSIONS_SQL = """
    SELECT pid, application_name, usename, host(client_addr), client_port, state,
           extract(epoch FROM clock_timestamp() - xact_start)::float8, query
    FROM pg_stat_activity
    WHERE pid = ANY(%s)
    ORDER BY xact_start NULLS LAST, pid
"""
_LOCK_HOLDERS_SQL = """
    SELECT pid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid::bigint = %s AND objid::bigint = %s
"""


class ReleaseBlocked(Exception):
    """The release could not proceed within its bounds; the message is one line naming the blocker."""


@dataclass(frozen=True)
class Session:
    """A PostgreSQL session as pg_stat_activity shows it (query text needs pg_read_all_stats for
    other users' sessions; PostgreSQL shows ``<insufficient privilege>`` otherwise)."""

    pid: int
    application_name: str
    user: str | None
    client: str
    state: str | None
    transaction_seconds: float | None
    query: str

    def describe(self) -> str:
        """Return the session in one line: pid, application_name, user, client, state, age, query."""
        age = "none" if self.transaction_seconds is None else f"open {self.transaction_seconds:.1f} s"
        query = " ".join(self.query.split())
        if len(query) > 100:
            query = query[:99] + "…"
        return (
            f"pid {self.pid} (application_name {self.application_name!r}, user {self.user!r}, "
            f"client {self.client}, state {self.state!r}, transaction {age}, query {query!r})"
        )


def sessions_get(*, cursor, pids: list[int]) -> list[Session]:
    """Return the sessions of ``pids`` that still exist, the oldest transaction first."""
    if not pids:
        return []
    cursor.execute(_SESSIONS_SQL, [pids])
    return [
        Session(
            pid=pid,
            application_name=application_name or "",
            user=user,
            client=f"{host}:{port}" if host else "local socket",
            state=state,
            transaction_seconds=age,
            query=query or "",
        )
        for pid, application_name, user, host, port, state, age, query in cursor.fetchall()
    ]


def _release_lock_holder(cursor) -> Session | None:
    cursor.execute(_LOCK_HOLDERS_SQL, [RELEASE_LOCK_KEY >> 32, RELEASE_LOCK_KEY & 0xFFFFFFFF])
    sessions = sessions_get(cursor=cursor, pids=[row[0] for row in cursor.fetchall()])
    return sessions[0] if sessions else None


@contextlib.contextmanager
def release_session(
    *, connection: BaseDatabaseWrapper, lock_wait: float, lock_timeout: float, poll: float = 0.5
) -> Iterator[int]:
    """Hold the release lock and the release's session settings on ``connection``; yield its pid.

    Wait up to ``lock_wait`` seconds (polling ``pg_try_advisory_lock`` every ``poll`` seconds)
    while another release holds the lock. Inside, the session has ``lock_timeout`` =
    ``lock_timeout`` seconds and ``statement_timeout`` = 0; on the way out both return to the
    connection's defaults (DATABASE_STATEMENT_TIMEOUT) and the lock is released (it would be
    anyway when the session ends, so a killed release never leaves it behind).

    Raise ReleaseBlocked naming the holder when ``lock_wait`` runs out; DatabaseError when
    PostgreSQL cannot be reached.
    """
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        _release_lock_acquire(cursor, lock_wait=lock_wait, poll=poll)
    try:
        with connection.cursor() as cursor:
            # PostgreSQL grants table locks in queue order: while an ALTER TABLE waits for its ACCESS
            # EXCLUSIVE lock behind a long transaction (a report, pg_dump), every later query on that
            # table waits behind it, even a plain SELECT
            # (https://www.postgresql.org/docs/current/explicit-locking.html). A short lock_timeout
            # ends that wait and lets the queued shop queries go on. statement_timeout 0: a
            # migration may rightly run long statements; only its lock waits are bounded.
            # Session-level (is_local false), so both outlive each migration's transaction.
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', '0', false)",
                [f"{round(lock_timeout * 1000)}ms"],
            )
        yield pid
    finally:
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout; RESET statement_timeout")
            cursor.execute("SELECT pg_advisory_unlock(%s)", [RELEASE_LOCK_KEY])


def role_timeout_set(*, connection: BaseDatabaseWrapper, role: str, statement_timeout: float) -> bool:
    """Make ``statement_timeout`` (seconds) the default of ``role`` in this database; return whether
    it changed.

    Behind a transaction pooler the app cannot set the timeout per connection (PgBouncer refuses
    libpq's ``options``, and a session's SET would follow the server connection to other clients),
    so it comes from the role: ``ALTER ROLE … IN DATABASE … SET statement_timeout``, which each new
    server session reads at start (https://www.postgresql.org/docs/current/sql-alterrole.html; an
    ordinary role may set its own defaults). Server sessions the pooler opened before keep their old
    value until it closes them (PgBouncer's ``server_lifetime``). Run through ``connection``, a
    direct session. Raise DatabaseError when PostgreSQL refuses (a role that may not alter ``role``).
    """
    value = f"{round(statement_timeout * 1000)}ms"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_database(), coalesce((SELECT s.setconfig FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE d.datname = current_database() AND r.rolname = %s), '{}')",
            [role],
        )
        database, config = cursor.fetchone()
        if f"statement_timeout={value}" in config:
            return False
        quote = connection.ops.quote_name
        cursor.execute(f"ALTER ROLE {quote(role)} IN DATABASE {quote(database)} SET statement_timeout = %s", [value])
    return True


def _release_lock_acquire(cursor, *, lock_wait: float, poll: float) -> None:
    started = time.monotonic()
    announced = False
    while True:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RELEASE_LOCK_KEY])
        if cursor.fetchone()[0]:
            break
        holder = _release_lock_holder(cursor)
        holder_text = holder.describe() if holder else "a session that just ended"
        waited = time.monotonic() - started
        if waited >= lock_wait:
            raise ReleaseBlocked(
                f"release: another release still holds the release lock after {lock_wait:g} s "
                f"(RELEASE_LOCK_WAIT): {holder_text}; let it finish (or stop it), then rerun the release"
            )
        if not announced:
            logger.warning("release: waiting up to %g s for another release to finish: %s", lock_wait, holder_text)
            announced = True
        time.sleep(min(poll, lock_wait - waited))
    if announced:
        logger.warning("release: the other release finished; going on after %.1f s", time.monotonic() - started)


class BlockerWatch:
    """Remember the session that most recently blocked the backend ``pid``, while in a ``with``.

    A thread with a connection of its own (a copy of ``connection``'s settings) asks
    ``pg_blocking_pids(pid)`` every ``interval`` seconds. It has to be watched while the wait
    happens: once lock_timeout has ended the wait, PostgreSQL no longer says who was in the way.
    Errors of the watch are logged and never disturb the release.
    """

    def __init__(self, *, connection: BaseDatabaseWrapper, pid: int, interval: float):
        self.latest: Session | None = None
        self._connection = connection
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="release-blocker-watch", daemon=True)

    def __enter__(self) -> "BlockerWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        # Created in this thread: Django's connection objects belong to the thread that made them.
        watch = self._connection.copy()
        failing = False
        try:
            while not self._stop.is_set():
                try:
                    with watch.cursor() as cursor:
                        cursor.execute("SELECT pg_blocking_pids(%s)", [self._pid])
                        blockers = sessions_get(cursor=cursor, pids=cursor.fetchone()[0])
                    failing = False
                except DatabaseError as exc:
                    if not failing:  # once per outage, not every interval
                        logger.warning("release: cannot watch for blocking sessions: %s", str(exc).strip())
                    failing = True
                    watch.close()
                    blockers = []
                if blockers:
                    self.latest = blockers[0]
                self._stop.wait(self._interval)
        finally:
            watch.close()


def lock_contention(exc: BaseException) -> bool:
    """Return whether ``exc`` (or an exception it was raised from) is lock contention (LOCK_CONTENTION)."""
    while exc is not None:
        if (getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)) in LOCK_CONTENTION:
            return True
        exc = exc.__cause__
    return False


def migrations_run(
    *,
    run: Callable[[], object],
    connection: BaseDatabaseWrapper,
    pid: int,
    lock_timeout: float,
    retries: int,
    delay: float,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Call ``run`` (the migrations) until it returns; retry it after lock contention.

    ``connection`` is the session ``run`` migrates on (backend ``pid``), with ``lock_timeout``
    seconds set (``release_session``). After lock contention, Django has rolled the migration's
    transaction back; pause ``delay`` seconds, doubling each time up to MAX_RETRY_DELAY, and call
    ``run`` again, at most ``retries`` times, logging one line per retry naming the blocker.
    Migrations applied by an earlier attempt stay applied and are skipped.

    Raise ReleaseBlocked (one line naming the blocking session) when the last attempt is blocked
    too; any other error of ``run`` propagates unchanged.
    """
    interval = min(0.25, max(0.02, lock_timeout / 10))
    with BlockerWatch(connection=connection, pid=pid, interval=interval) as watch:
        for attempt in range(retries + 1):
            try:
                run()
                return
            except DatabaseError as exc:
                if not lock_contention(exc):
                    raise
                seen = watch.latest
                blocker = seen.describe() if seen else "a session that ended before it was seen"
                if attempt == retries:
                    raise ReleaseBlocked(
                        f"release: a migration waited for a lock {attempt + 1} times, {lock_timeout:g} s each "
                        f"(MIGRATION_LOCK_TIMEOUT, MIGRATION_LOCK_RETRIES), and was rolled back; blocked by "
                        f"{blocker}. Let that session finish or end it (SELECT pg_terminate_backend("
                        f"{seen.pid if seen else 'pid'})), then rerun the release"
                    ) from None
                pause = min(delay * 2**attempt, MAX_RETRY_DELAY)
                logger.warning(
                    "release: a migration waited %g s for a lock and was rolled back; blocked by %s; "
                    "retry %d of %d in %g s",
                    lock_timeout,
                    blocker,
                    attempt + 1,
                    retries,
                    pause,
                )
                sleep(pause)
