"""PostgreSQL refusing a new connection: tell it from other database errors, and report it in few lines.

A refusal at connect (no free slot, a server starting or stopping, nothing listening) says
nothing about the work that wanted the connection: no statement ran, nothing was written. The
worker puts such a job back instead of failing it (processes.worker.Worker); an error inside a
transaction is not a refusal and keeps its usual handling. Documented in
docs/processes.md#postgresql-refusing-connections.
"""

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

# The kinds of refusal, each with the SQLSTATE class it stands for and the words of the log line.
TOO_MANY_CLIENTS = "too_many_clients"  # 53300 too_many_connections, 53400 configuration_limit_exceeded
NOT_ACCEPTING = "not_accepting"  # 57P03 cannot_connect_now: starting up, shutting down, in recovery
UNREACHABLE = "unreachable"  # nothing listening (connection refused) or no answer within connect_timeout
READ_ONLY = "read_only"  # 25006 read_only_sql_transaction: a standby, or default_transaction_read_only on
DISK_FULL = "disk_full"  # 53100 disk_full
DESCRIPTIONS = {
    READ_ONLY: "read-only",
    DISK_FULL: "disk full",
    TOO_MANY_CLIENTS: "too many clients",
    NOT_ACCEPTING: "not accepting connections",
    UNREACHABLE: "unreachable",
}
WRITE_KINDS = frozenset({READ_ONLY, DISK_FULL})
SQLSTATES = {"53300": TOO_MANY_CLIENTS, "53400": TOO_MANY_CLIENTS, "57P03": NOT_ACCEPTING}
# libpq gives no SQLSTATE for an error during connection start-up (psycopg's ``sqlstate`` is None
# for every one of them, measured with psycopg 3.3 and libpq 18), so the server's words are read:
# PostgreSQL's messages for 53300 and 57P03, PgBouncer's for its own client limit, and libpq's for
# a refused or timed-out TCP connect. The server's messages must be in English (lc_messages).
MESSAGES = (
    ("sorry, too many clients already", TOO_MANY_CLIENTS),
    ("remaining connection slots are reserved", TOO_MANY_CLIENTS),
    ("too many connections for role", TOO_MANY_CLIENTS),
    ("too many connections for database", TOO_MANY_CLIENTS),
    ("no more connections allowed", TOO_MANY_CLIENTS),
    ("the database system is starting up", NOT_ACCEPTING),
    ("the database system is shutting down", NOT_ACCEPTING),
    ("the database system is in recovery mode", NOT_ACCEPTING),
    ("the database system is not yet accepting connections", NOT_ACCEPTING),
    ("the database system is not accepting connections", NOT_ACCEPTING),
    ("connection refused", UNREACHABLE),
    ("timeout expired", UNREACHABLE),
)
# Refusals of a write by a server that is up: PostgreSQL rolls back the statement's transaction
# (https://www.postgresql.org/docs/current/errcodes-appendix.html), so, like a refusal at
# connect, nothing was written and the work may be tried again once writes are accepted.
WRITE_SQLSTATES = {"25006": READ_ONLY, "53100": DISK_FULL}
# psycopg raises every error of a connection attempt from Connection.connect (after trying each
# host), so a psycopg error whose traceback passes through it was raised while connecting.
_CONNECT_CODE = psycopg.Connection.connect.__func__.__code__


@dataclass(frozen=True)
class Refusal:
    """PostgreSQL refused a new connection: ``kind`` (TOO_MANY_CLIENTS, NOT_ACCEPTING or
    UNREACHABLE) and ``detail``, the one line that the server or libpq gave."""

    kind: str
    detail: str

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.kind]

    @property
    def refused(self) -> str:
        """What PostgreSQL refused: "writes" (READ_ONLY, DISK_FULL) or "connections" (the rest)."""
        return "writes" if self.kind in WRITE_KINDS else "connections"


def connection_refusal(exc: BaseException) -> Refusal | None:
    """Return the Refusal that ``exc`` is, or None for any other error.

    ``exc`` is what a caller caught: Django's OperationalError (its ``__cause__`` is psycopg's) or
    psycopg's own. A refusal is a psycopg error raised while connecting (psycopg's
    ``Connection.connect``) whose SQLSTATE, or else whose message, is one of SQLSTATES or
    MESSAGES. Errors of an open connection (a statement timeout, a terminated session, a lost
    server mid-transaction) and other errors at connect (wrong password, unknown database) are
    not refusals: they keep their usual handling.
    """
    error = _psycopg_error(exc)
    if error is None or not _raised_while_connecting(error):
        return None
    text = " ".join(str(error).split())
    kind = SQLSTATES.get(error.sqlstate or "")
    if kind is None:
        lowered = text.lower()
        kind = next((kind for words, kind in MESSAGES if words in lowered), None)
    if kind is None:
        return None
    # "connection failed: connection to server at "h", port p failed: FATAL:  sorry, …": the server's part.
    detail = re.sub(r"^.*\bfailed: ", "", str(error).strip().splitlines()[0])
    return Refusal(kind=kind, detail=" ".join(detail.split()))


def write_refusal(exc: BaseException) -> Refusal | None:
    """Return the Refusal (READ_ONLY or DISK_FULL) that ``exc`` is, or None for any other error.

    ``exc`` is Django's wrapper (InternalError for 25006, OperationalError for 53100) or
    psycopg's own error; its SQLSTATE decides (WRITE_SQLSTATES), at any point of a connection's
    life: a standby after failover or a server with ``default_transaction_read_only`` on refuses
    the write, not the connection (cloudnative-pg#1254).
    """
    error = _psycopg_error(exc)
    if error is None:
        return None
    kind = WRITE_SQLSTATES.get(error.sqlstate or "")
    if kind is None:
        return None
    return Refusal(kind=kind, detail=" ".join(str(error).strip().splitlines()[0].split()))


def database_refusal(exc: BaseException) -> Refusal | None:
    """Return the Refusal that ``exc`` is, at connect (connection_refusal) or of a write
    (write_refusal), or None: either way nothing was written and the work may be retried."""
    return connection_refusal(exc) or write_refusal(exc)


def _psycopg_error(exc: BaseException) -> psycopg.Error | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, psycopg.Error):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _raised_while_connecting(error: psycopg.Error) -> bool:
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code is _CONNECT_CODE:
            return True
        frame = frame.tb_next
    return False


class RefusalLog:
    """Say that PostgreSQL refuses connections or writes in a few lines instead of one per refused job.

    ``record`` counts a job put back; the first refusal of a kind is logged at once, later ones at
    most once per ``interval`` seconds per kind, with how many jobs were put back since that kind's
    last line. ``accepted`` logs one line when jobs succeed again after refusals. Each line says
    what was refused, connections or writes (Refusal.refused): a standby refuses no connection.
    Every line is on ``logger`` (WARNING for refusals, INFO for the recovery); ``clock`` (seconds,
    time.monotonic unless a test gives its own) times the intervals.
    """

    def __init__(self, logger: logging.Logger, *, interval: float, clock: Callable[[], float] = time.monotonic):
        self.logger, self.interval, self.clock = logger, interval, clock
        self.counts: dict[str, int] = {}
        self.logged_at: dict[str, float] = {}
        self.total = 0
        self.since: float | None = None
        self.refused: set[str] = set()

    def record(self, refusal: Refusal, *, wait: float) -> None:
        """Count one job put back after ``refusal``; ``wait`` is the seconds until the next try."""
        now = self.clock()
        if self.since is None:
            self.since = now
        self.total += 1
        self.refused.add(refusal.refused)
        kind = refusal.kind
        self.counts[kind] = self.counts.get(kind, 0) + 1
        last = self.logged_at.get(kind)
        if last is not None and now - last < self.interval:
            return
        count = self.counts.pop(kind)
        span = f"in the last {now - last:.0f} s" if last is not None else "just now"
        self.logger.warning(
            "PostgreSQL refused %s (%s: %s): %d job%s put back %s, unrun and with no retry spent; next try in %.1f s",
            refusal.refused,
            refusal.description,
            refusal.detail,
            count,
            "" if count == 1 else "s",
            span,
            wait,
        )
        self.logged_at[kind] = now

    def accepted(self) -> None:
        """Log one line if connections or writes were refused since the last call: they succeed again."""
        if self.since is None:
            return
        self.logger.info(
            "PostgreSQL accepts %s again: %d job%s put back over the last %.0f s",
            " and ".join(sorted(self.refused)),
            self.total,
            "" if self.total == 1 else "s",
            self.clock() - self.since,
        )
        self.counts.clear()
        self.logged_at.clear()
        self.total = 0
        self.since = None
        self.refused.clear()
