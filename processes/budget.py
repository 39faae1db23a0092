"""The formation's PostgreSQL connection budget: what each process type holds, and whether it fits.

One formula for every reader: the deploy check (processes.checks, ``manage.py check --deploy``),
the embedded runner (``python -m embedded run``) and the tables of docs/connections.md, whose
figures a test computes with ``peak_connections``. The per-process figures were measured with
``pg_stat_activity`` on the embedded default (docs/connections.md#what-each-process-holds).
Nothing here imports Django: the runner calls it before any settings exist.
"""

from collections.abc import Mapping
from dataclasses import dataclass

# PostgreSQL connections one process of each long-running type holds at its peak, measured
# (docs/connections.md#what-each-process-holds). web: one per gunicorn worker, held while the worker
# lives, so WEB_CONCURRENCY of them (the arbiter holds none); see per_process.
# worker: its work horse opens `default` and, to charge an order, the sandbox gateway's alias,
# anew for every job; the parent holds none (it only checks PostgreSQL once at start).
# scheduler: none (Redis only). mailer: one, held.
WORK_HORSE_CONNECTIONS = 2
MAILER_CONNECTIONS = 1
SCHEDULER_CONNECTIONS = 0
LONG_RUNNING_TYPES = ("web", "worker", "scheduler", "mailer")
# Connections kept free of the formation by default (DATABASE_CONNECTION_HEADROOM): the release
# phase's 2, a KEDA scaler's 1, an operator's psql and `manage.py probe mailer` (docs/connections.md#the-check);
# the pods' probes hold none of their own (their readiness borrows a pooled connection for a moment).
DEFAULT_HEADROOM = 5

# Asked of PostgreSQL in one round trip, by the formation's own role: reserved_connections
# (PostgreSQL 16+, for roles granted pg_use_reserved_connections) reads as 0 on older servers; a
# role's or database's CONNECTION LIMIT is -1 when there is none (how a shared plan may cap a tenant).
LIMITS_SQL = """
    SELECT current_setting('max_connections')::int,
           current_setting('superuser_reserved_connections')::int,
           coalesce(current_setting('reserved_connections', true), '0')::int,
           (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user),
           (SELECT datconnlimit FROM pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True)
class ServerLimits:
    """What a PostgreSQL server lets one non-superuser role open (counts of connections)."""

    max_connections: int
    superuser_reserved: int  # superuser_reserved_connections: slots only a superuser may take
    reserved: int = 0  # reserved_connections (PostgreSQL 16+), for members of pg_use_reserved_connections
    role_limit: int = -1  # the role's CONNECTION LIMIT, -1 for none
    database_limit: int = -1  # the database's CONNECTION LIMIT, -1 for none

    def ceiling(self) -> tuple[int, str]:
        """Return (the connections the role may hold at most, what sets that number, in words)."""
        reserves = f"{self.superuser_reserved} superuser_reserved_connections"
        if self.reserved:
            reserves += f" and {self.reserved} reserved_connections"
        ceilings = [
            (
                self.max_connections - self.superuser_reserved - self.reserved,
                f"max_connections {self.max_connections} less {reserves}",
            )
        ]
        if self.role_limit >= 0:
            ceilings.append((self.role_limit, f"the role's CONNECTION LIMIT {self.role_limit}"))
        if self.database_limit >= 0:
            ceilings.append((self.database_limit, f"the database's CONNECTION LIMIT {self.database_limit}"))
        return min(ceilings)

    def for_formation(self, headroom: int) -> int:
        """Return the connections the formation may hold: the ceiling less ``headroom`` (what the
        operator, the release, probes and scalers need)."""
        return self.ceiling()[0] - headroom


def server_limits(connection) -> ServerLimits:
    """Ask PostgreSQL through ``connection`` (a psycopg connection of the formation's role) for its ServerLimits.

    Raise psycopg.Error when the query fails.
    """
    return ServerLimits(*connection.execute(LIMITS_SQL).fetchone())


def parse_formation(text: str) -> dict[str, int]:
    """Return ``text`` (``web=3,worker=12``, honcho's ``-c`` syntax) as {process type: processes}.

    A long-running type it does not name counts as one process, as under honcho, so ``""`` is one
    of each. Raise ValueError naming the fault for an unknown type (the release, a one-off, is
    none of them: the headroom covers it), a type named twice, or a count that is not an integer
    of at least 0.
    """
    formation = dict.fromkeys(LONG_RUNNING_TYPES, 1)
    named: set[str] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, count = (piece.strip() for piece in item.partition("="))
        if name not in LONG_RUNNING_TYPES:
            raise ValueError(f"unknown process type {name!r} (the long-running ones: {', '.join(LONG_RUNNING_TYPES)})")
        if name in named:
            raise ValueError(f"process type {name!r} is named twice")
        if not equals or not count.isdigit():
            raise ValueError(f"{item!r} is not <type>=<processes>, e.g. worker=3")
        named.add(name)
        formation[name] = int(count)
    return formation


def per_process(process_type: str, *, web_concurrency: int) -> int:
    """Return the PostgreSQL connections one process of ``process_type`` holds at its peak.

    ``web_concurrency`` is WEB_CONCURRENCY, gunicorn workers per web process. Raise ValueError for
    a type that is not long-running.
    """
    figures = {
        "web": web_concurrency,
        "worker": WORK_HORSE_CONNECTIONS,
        "scheduler": SCHEDULER_CONNECTIONS,
        "mailer": MAILER_CONNECTIONS,
    }
    if process_type not in figures:
        raise ValueError(f"unknown process type {process_type!r}")
    return figures[process_type]


def client_connections(formation: Mapping[str, int], *, web_concurrency: int) -> int:
    """Return the connections ``formation`` ({process type: processes}) opens at its peak, to
    PostgreSQL or to a pooler: web × WEB_CONCURRENCY + worker × 2 + mailer × 1 + scheduler × 0.

    Raise ValueError for a type that is not long-running.
    """
    return sum(count * per_process(name, web_concurrency=web_concurrency) for name, count in formation.items())


def peak_connections(
    formation: Mapping[str, int], *, web_concurrency: int, pool_size: int | None = None, gateway_direct: bool = False
) -> int:
    """Return the most PostgreSQL server connections ``formation`` holds at once.

    The formula (docs/connections.md#the-formula), every figure a count of connections::

        clients = web × WEB_CONCURRENCY + worker × 2 + mailer × 1 + scheduler × 0
        peak    = clients                      without a pooler
                = min(clients, pool_size)      behind one (a pooler opens a server connection
                                               only for a client's transaction, at most pool_size)
                = min(clients - worker, pool_size) + worker
                                               behind one, with the sandbox gateway connecting
                                               directly (``gateway_direct``: DATABASE_POOLED without
                                               DATABASE_GATEWAY_URL, docs/connections.md#the-sandbox-gateway)

    ``formation`` maps each long-running process type to its number of processes (see
    parse_formation); ``web_concurrency`` is WEB_CONCURRENCY; ``pool_size`` the server connections
    the pooler may open in all (PgBouncer's default_pool_size × its replicas, DATABASE_POOL_SIZE),
    None when the processes connect to PostgreSQL directly or the pool's size is not known. One-off
    users (the release and the post-deploy step, 2 each; a KEDA scaler; an operator's psql or ``probe mailer``)
    are not counted: the headroom is for them. Raise ValueError for a type that is not long-running.
    """
    clients = client_connections(formation, web_concurrency=web_concurrency)
    if pool_size is None:
        return clients
    direct = formation.get("worker", 0) if gateway_direct else 0
    return min(clients - direct, pool_size) + direct


def describe(
    formation: Mapping[str, int], *, web_concurrency: int, pool_size: int | None = None, gateway_direct: bool = False
) -> str:
    """Return how peak_connections adds up, e.g. ``web 3 × WEB_CONCURRENCY 32 = 96 + worker 12 × 2 = 24``."""
    terms = []
    for name, count in formation.items():
        each = per_process(name, web_concurrency=web_concurrency)
        if count and each:
            factor = f"WEB_CONCURRENCY {each}" if name == "web" else str(each)
            terms.append(f"{name} {count} × {factor} = {count * each}")
    text = " + ".join(terms) or "no process that connects"
    clients = client_connections(formation, web_concurrency=web_concurrency)
    direct = formation.get("worker", 0) if gateway_direct and pool_size is not None else 0
    if pool_size is not None and pool_size < clients - direct:
        text += f", through a pool of {pool_size} server connections (DATABASE_POOL_SIZE)"
    if direct:
        text += f", the sandbox gateway's {direct} of them to PostgreSQL directly (no DATABASE_GATEWAY_URL)"
    return text


def over_budget(
    formation: Mapping[str, int],
    *,
    web_concurrency: int,
    pool_size: int | None,
    limits: ServerLimits,
    headroom: int,
    gateway_direct: bool = False,
) -> str | None:
    """Return one sentence naming the numbers when ``formation`` can hold more connections than
    ``limits`` leave it after ``headroom``, else None (``gateway_direct``: see peak_connections)."""
    peak = peak_connections(
        formation, web_concurrency=web_concurrency, pool_size=pool_size, gateway_direct=gateway_direct
    )
    allowed = limits.for_formation(headroom)
    if peak <= allowed:
        return None
    ceiling, source = limits.ceiling()
    how = describe(formation, web_concurrency=web_concurrency, pool_size=pool_size, gateway_direct=gateway_direct)
    return (
        f"The formation can hold {peak} PostgreSQL connections at once ({how}), more than the {allowed} "
        f"left of {ceiling} ({source}) after {headroom} of headroom (DATABASE_CONNECTION_HEADROOM)."
    )
