"""Saturation: another client holds most of PostgreSQL's slots while shoppers order; measured twice,
with the formation connected to PostgreSQL directly, then through PgBouncer. One table.

    make saturation [SATURATION_SECONDS=150] [SATURATION_ARGS="--shoppers 8 --most-requests 8000"]
    python -m embedded test -- python bench/saturation.py --seconds 60 [--formation web=3,worker=12,mailer=2]

It runs against the servers of ``python -m embedded test``: its PostgreSQL (DATABASE_URL,
``max_connections`` 200) and Redis (REDIS_URL; database 1 for the direct run, 2 for the pooled one,
flushed first). Each run has what it needs of its own: a fresh database (CREATE DATABASE through
the direct URL, dropped at the end), the Procfile's release line, an SMTP sink in this process
(bench/soak.py's Sink, recording each message's Message-ID) and, for the pooled run, a PgBouncer
started for it (embedded.servers.PgBouncer, stock transaction pooling, set up as docker compose
sets it up: ``default_pool_size`` 16 and a pool of 4 for the sandbox gateway, DATABASE_GATEWAY_URL;
``--pool-size``, ``--gateway-pool-size``). The processes' logs are kept under
``.formation/saturation/<database>/logs/``.

Each run, in a process of its own (the Django settings it reads are the run's):

1. the release (``migrate --noinput`` from the Procfile; through PgBouncer it uses
   DATABASE_DIRECT_URL), every active product's stock raised so no checkout is refused as sold out;
2. the formation, the Procfile's own lines: web=3 (each on its own PORT, each with WEB_CONCURRENCY
   gunicorn workers, 32), worker=12, scheduler=1, mailer=2 (``--formation``), with DYNO set as
   honcho and Heroku set it (``web.1``: connections are named ``formation/web.1/…``), the shop's
   own timings otherwise, LOG_FORMAT=text; it waits (``--boot-deadline``) for every web's
   ``/health`` and all its gunicorn workers, and every other process's ready line;
3. one order per web, placed and paid before anything is held;
4. the other client: ``--held`` (110) plain psycopg connections to the direct server, opened
   at once and held for the whole window; meanwhile ``--shoppers`` (8) threads, spread over the
   webs as a load balancer would, buy the mug (catalogue, *Add to cart*, checkout page, checkout
   POST, ``--think`` seconds before each request; a 503 or any other unexpected answer ends the
   purchase) for ``--seconds`` (150) or until they have sent ``--most-requests`` in all;
5. at the end of the window: the orders still pending and the lines the formation logged during
   it; then the slots are released and it waits (``--settle``) until every order is paid or failed
   with a reason and its email has reached the sink;
6. the ledger, as bench/soak.py counts it: every accepted order exists (else lost), is paid with
   exactly one succeeded gateway charge matching its Charge, and its email was sent and received
   exactly once (more than one charge or email: double); every order was submitted by a shopper;
   none exists for a checkout answered 503.

Throughout, a thread samples ``pg_stat_activity`` every 0.5 s for the formation's connections
(``application_name LIKE 'formation/%'``, on the run's database; this process's own is left out):
their peak in the window and over the whole run, beside the formula's (processes.budget). Behind
PgBouncer these are its server connections, each named after the client that used it last. The
shoppers time each answer (median and 95th percentile).

Prints one markdown table, both runs side by side, and each run's violations; exits 1 when a run's
ledger is broken, 2 when a run could not be measured.
"""

import argparse
import collections
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.soak import Clock, Sink, failed_jobs, kill_tree, order_from, unsettled  # noqa: E402
from embedded.servers import PgBouncer  # noqa: E402
from embedded.shopper import Browser, checkout_data, hidden, page_lines  # noqa: E402
from processes.budget import parse_formation, peak_connections  # noqa: E402
from processes.procfile import READY_LINES, process_commands, web_healthy  # noqa: E402

STATE = ROOT / ".formation"
RUNS = STATE / "saturation"
MODES = ("direct", "pgbouncer")
LABELS = {"direct": "direct", "pgbouncer": "through PgBouncer"}
REDIS_DATABASES = {"direct": 1, "pgbouncer": 2}
DEFAULT_FORMATION = "web=3,worker=12,scheduler=1,mailer=2"
PRODUCT = "procfile-mug"
# application_name of this bench's own connections: none starts with "formation/".
HOLDER_NAME = "saturation-other-client"
SAMPLER_NAME = "saturation-sampler"
SAMPLE_SECONDS = 0.5
# Seconds: the release phase at most; each process to exit after SIGTERM before it is killed; the
# warm-up orders to be paid.
RELEASE_DEADLINE = 300.0
STOP_GRACE = 30.0
WARM_UP_DEADLINE = 90.0
# Seconds a run may take beyond its boot deadline, window and settle time before it is stopped.
RUN_SLACK = 600.0


def say(mode: str, message: str) -> None:
    """Print one progress line of run ``mode``."""
    print(f"saturation [{mode}] {time.strftime('%H:%M:%S')} {message}", flush=True)


def with_database(url: str, name: str) -> str:
    """Return ``url`` with its database replaced by ``name`` (host, role and query kept)."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


# --- PgBouncer as docker compose runs it ---------------------------------------------------------


class ComposePgBouncer(PgBouncer):
    """The embedded PgBouncer (stock transaction pooling) with docker compose's pools
    (deploy/compose/pgbouncer.ini): ``pool_size`` server connections for the app's database at most
    (``default_pool_size`` and ``max_db_connections``) and a second entry, ``<database>_gateway``,
    for the same database with ``gateway_pool_size`` of its own (DATABASE_GATEWAY_URL)."""

    def __init__(self, root: Path, *, database_url: str, pool_size: int, gateway_pool_size: int):
        super().__init__(root, durable=False, database_url=database_url, install_root=STATE)
        self.pool_size, self.gateway_pool_size = pool_size, gateway_pool_size
        self.database = self.upstream.path.lstrip("/")

    def settings(self, port: int) -> str:
        upstream = f"host={self.upstream.hostname} port={self.upstream.port or 5432}"
        gateway = (
            f"{self.database}_gateway = {upstream} dbname={self.database}"
            f" pool_size={self.gateway_pool_size} max_db_connections={self.gateway_pool_size}"
        )
        text = super().settings(port).replace("[databases]\n", f"[databases]\n{gateway}\n", 1)
        limit = f"default_pool_size = {self.pool_size}\n"
        return text.replace(limit, f"{limit}max_db_connections = {self.pool_size}\n", 1)

    def gateway_url(self) -> str:
        """Return the URL of the gateway's pool (same role, its own database entry)."""
        return with_database(self.url(), f"{self.database}_gateway")


# --- The formation -----------------------------------------------------------------------------


class Process:
    """One process of the formation (``web.2``): its Procfile command through ``/bin/sh -c`` in a
    session of its own, stdout and stderr to ``<logs>/<name>.log``."""

    def __init__(self, kind: str, index: int, command: str, env: dict[str, str], logs: Path):
        self.kind, self.name, self.env = kind, f"{kind}.{index}", env
        self.log_path = logs / f"{self.name}.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def ready(self, web_concurrency: int) -> bool:
        """Return True once web answers /health with all its ``web_concurrency`` gunicorn workers
        forked, or the other types have printed their ready line (processes.procfile.READY_LINES)."""
        if self.kind != "web":
            return READY_LINES[self.kind].encode() in self.log_path.read_bytes()
        try:
            workers = len(psutil.Process(self.popen.pid).children())
        except psutil.NoSuchProcess:
            return False
        return workers >= web_concurrency and web_healthy(self.env["PORT"])

    def size(self) -> int:
        """Return the bytes logged so far (a mark for log_between)."""
        return self.log_path.stat().st_size

    def log_between(self, start: int, end: int) -> bytes:
        with open(self.log_path, "rb") as log:
            log.seek(start)
            return log.read(end - start)

    def tail(self, lines: int = 12) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Formation:
    """The Procfile's long-running types, ``counts`` processes of each, started at once."""

    def __init__(self, counts: dict[str, int], env: dict[str, str], logs: Path):
        commands = process_commands()
        self.processes: list[Process] = []
        for kind, count in counts.items():
            for index in range(1, count + 1):
                own = {**env, "DYNO": f"{kind}.{index}"}
                if kind == "web":
                    own["PORT"] = env[f"PORT_WEB_{index}"]
                self.processes.append(Process(kind, index, commands[kind], own, logs))

    @property
    def webs(self) -> list[Process]:
        return [process for process in self.processes if process.kind == "web"]

    def wait_ready(self, web_concurrency: int, deadline: float) -> float:
        """Poll every 0.5 s until every process is ready; return the seconds it took.

        Raise RuntimeError, with the last lines of its log, when a process exits first, or naming
        the processes not ready after ``deadline`` seconds.
        """
        began = time.monotonic()
        waiting = list(self.processes)
        while waiting:
            for process in waiting:
                if not process.alive():
                    raise RuntimeError(f"{process.name} exited {process.popen.returncode}:\n{process.tail()}")
            waiting = [process for process in waiting if not process.ready(web_concurrency)]
            if waiting and time.monotonic() - began > deadline:
                raise RuntimeError(f"not ready within {deadline:g}s: {', '.join(p.name for p in waiting)}")
            if waiting:
                time.sleep(0.5)
        return time.monotonic() - began

    def marks(self) -> list[int]:
        return [process.size() for process in self.processes]

    def logged(self, start: list[int], end: list[int]) -> dict[str, int]:
        """Count what the processes logged between two ``marks()``: lines (web's and the others'),
        tracebacks, and the workers' lines saying PostgreSQL refused connections."""
        counts = collections.Counter()
        for process, first, last in zip(self.processes, start, end, strict=True):
            text = process.log_between(first, last)
            counts["web lines" if process.kind == "web" else "other lines"] += text.count(b"\n")
            counts["tracebacks"] += text.count(b"Traceback (most recent call last)")
            counts["refusal lines"] += text.count(b"PostgreSQL refused connections")
        return dict(counts)

    def exited(self) -> list[str]:
        """Return a line for each process that has exited, with its last lines."""
        return [f"{p.name} exited {p.popen.returncode}:\n{p.tail()}" for p in self.processes if not p.alive()]

    def stop(self) -> None:
        """SIGTERM every process (as a platform stops a container), kill what is left after
        STOP_GRACE seconds, its descendants (a work horse) included."""
        for process in self.processes:
            if process.alive():
                with contextlib.suppress(ProcessLookupError):
                    process.popen.send_signal(signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE
        for process in self.processes:
            try:
                process.popen.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_tree(process.popen.pid)
                process.popen.wait(timeout=10)


# --- The other client, the sampler ---------------------------------------------------------------


def hold_slots(url: str, count: int) -> list[psycopg.Connection]:
    """Open ``count`` connections to ``url``, as another client holding PostgreSQL's slots (the
    same idea as the tests' SlotHolder, tests/support/slots.py, which takes every slot instead);
    return them. Close them and re-raise psycopg.OperationalError when one is refused."""
    held: list[psycopg.Connection] = []
    try:
        for _ in range(count):
            held.append(psycopg.connect(url, autocommit=True, connect_timeout=5, application_name=HOLDER_NAME))
    except psycopg.OperationalError:
        release_slots(held)
        raise
    return held


def release_slots(held: list[psycopg.Connection]) -> None:
    for connection in held:
        connection.close()
    held.clear()


class Sampler(threading.Thread):
    """Count the formation's PostgreSQL connections on ``database`` every SAMPLE_SECONDS through a
    connection of its own to ``url``; keep the peak in all, the peak while ``in_window`` is set (the
    saturation window), and each process type's own peak.

    With ``console_url`` (PgBouncer's admin console), also ``SHOW POOLS`` at each sample: the most
    clients waiting for a server connection at once, and the longest wait, in the window."""

    QUERY = """
        SELECT split_part(split_part(application_name, '/', 2), '.', 1), count(*)
        FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND datname = %s
          AND application_name LIKE 'formation/%%' AND application_name NOT LIKE 'formation/bench%%'
        GROUP BY 1
    """

    def __init__(self, url: str, database: str, console_url: str | None = None):
        super().__init__(name="sampler", daemon=True)
        self.connection = psycopg.connect(url, autocommit=True, application_name=SAMPLER_NAME)
        # prepare_threshold None: a prepared statement is the extended protocol, which the console refuses.
        self.console = (
            psycopg.connect(console_url, autocommit=True, row_factory=dict_row, prepare_threshold=None)
            if console_url
            else None
        )
        self.waiting = 0  # clients waiting in PgBouncer's queue at once, at most (in the window)
        self.longest_wait = 0.0  # seconds the oldest waiting client had waited, at most (in the window)
        self.database = database
        self.peak = self.window_peak = 0
        self.peak_by_type: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()  # "what: error" of each failed sample
        self.in_window = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(SAMPLE_SECONDS):
            try:
                rows = self.connection.execute(self.QUERY, [self.database]).fetchall()
            except psycopg.Error as exc:
                self.errors[f"pg_stat_activity: {str(exc).strip()[:120]}"] += 1
                continue
            total = sum(count for _, count in rows)
            self.peak = max(self.peak, total)
            if self.in_window.is_set():
                self.window_peak = max(self.window_peak, total)
            for kind, count in rows:
                self.peak_by_type[kind] = max(self.peak_by_type[kind], count)
            if self.console is not None and self.in_window.is_set():
                self.sample_pools()

    def sample_pools(self) -> None:
        try:
            pools = [pool for pool in self.console.execute("SHOW POOLS").fetchall() if pool["database"] != "pgbouncer"]
        except psycopg.Error as exc:
            self.errors[f"SHOW POOLS: {str(exc).strip()[:120]}"] += 1
            return
        self.waiting = max(self.waiting, sum(pool["cl_waiting"] for pool in pools))
        for pool in pools:
            self.longest_wait = max(self.longest_wait, pool["maxwait"] + pool["maxwait_us"] / 1e6)

    def close(self) -> None:
        self.halt.set()
        self.join(timeout=5)
        self.connection.close()
        if self.console is not None:
            self.console.close()


# --- Shoppers ------------------------------------------------------------------------------------


class GaveUp(Exception):
    """A shopper ends a purchase: an answer other than the expected one, or time is up."""


@dataclass
class Tally:
    """What the shoppers saw, shared by their threads."""

    most: int  # requests in all, at most
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    unavailable: int = 0  # answered 503
    retry_after: collections.Counter = field(default_factory=collections.Counter)  # of each 503; "" when absent
    errors: collections.Counter = field(default_factory=collections.Counter)  # "step: status or error"
    # The token of each checkout POST sent, and what it answered: accepted, 503, or another error.
    submitted: dict[str, str] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)  # order ids of the 303s
    seconds: list[float] = field(default_factory=list)  # of each answered request

    def percentile(self, share: float) -> float | None:
        """Return the seconds within which ``share`` (0–1) of the answered requests were answered."""
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else None

    def spent(self) -> bool:
        with self.lock:
            return self.requests >= self.most


class Shopper(threading.Thread):
    """A shopper buying the mug in a loop at one web until ``end`` (time.monotonic()) or until the
    shoppers together have sent ``tally.most`` requests; ``think`` seconds before each request."""

    def __init__(self, number: int, base: str, tally: Tally, end: float, think: float):
        super().__init__(name=f"shopper-{number}", daemon=True)
        self.number, self.base, self.tally, self.end, self.think = number, base, tally, end, think

    def more(self) -> bool:
        return time.monotonic() < self.end and not self.tally.spent()

    def run(self) -> None:
        while self.more():
            with contextlib.suppress(GaveUp):
                self.purchase(Browser(self.base))

    def ask(self, browser: Browser, step: str, path: str, data: dict | None, ok: int) -> tuple[dict, str]:
        """Send one request after the think time; return (headers, body) when it answers ``ok``.
        Count it; raise GaveUp on any other answer, or when time or requests are up."""
        if not self.more():
            raise GaveUp("time or requests are up")
        time.sleep(self.think)
        sent = time.monotonic()
        try:
            status, headers, body = browser.request(path, data)
            error = None if status == ok else str(status)
        except OSError as exc:  # refused, reset, timed out (urllib's URLError is an OSError)
            status, headers, body, error = 0, {}, "", type(getattr(exc, "reason", exc)).__name__
        with self.tally.lock:
            self.tally.requests += 1
            if status:
                self.tally.seconds.append(time.monotonic() - sent)
            if status == 503:
                self.tally.unavailable += 1
                self.tally.retry_after[headers.get("Retry-After", "")] += 1
            elif error:
                self.tally.errors[f"{step}: {error}"] += 1
            if step == "checkout":
                self.tally.submitted[data["token"]] = "accepted" if error is None else error
        if error:
            raise GaveUp(f"{step}: {error}")
        return headers, body

    def purchase(self, browser: Browser) -> None:
        page = self.ask(browser, "catalogue", "/", None, 200)[1]
        form = {"product": PRODUCT, "quantity": 1, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
        self.ask(browser, "add to cart", "/cart/add/", form, 303)
        page = self.ask(browser, "checkout page", "/checkout/", None, 200)[1]
        data = {
            **checkout_data(
                token=hidden("token", page), email=f"shopper{self.number}@example.com", lines=page_lines(page)
            ),
            "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
        }
        headers = self.ask(browser, "checkout", "/checkout/", data, 303)[0]
        with self.tally.lock:
            self.tally.accepted.append(order_from(headers) or "?")


# --- The ledger ----------------------------------------------------------------------------------


def check_ledger(tally: Tally, sink: Sink) -> dict:
    """Count the ledger against the run's database and the sink (bench/soak.py's check_ledger,
    without its chaos): return figures and ``violations`` (lines; none when it holds)."""
    from mailer.models import OutboxMessage, OutboxStatus
    from orders.models import Charge, Order, SandboxCharge

    violations: list[str] = []
    orders = {str(order.pk): order for order in Order.objects.all()}
    charges = collections.defaultdict(list)
    for charge in SandboxCharge.objects.all():
        charges[str(charge.idempotency_key)].append(charge)
    shop_charges = {charge.order_id: charge for charge in Charge.objects.all()}
    outbox = {message.key: message for message in OutboxMessage.objects.all()}
    receipts = collections.Counter(receipt.message_id for receipt in sink.received())

    lost = [order_id for order_id in tally.accepted if order_id not in orders]
    violations += [f"order {order_id} accepted (303) but not in the database: lost" for order_id in lost]
    figures = collections.Counter()
    doubles = 0
    for order in orders.values():
        key = str(order.idempotency_key)
        answer = tally.submitted.get(key)
        if answer is None:
            violations.append(f"order {order.pk} exists but no shopper submitted its checkout")
        elif answer == "503":
            violations.append(f"order {order.pk} exists but its checkout was answered 503")
        elif answer != "accepted":
            figures["orders whose checkout answer was lost"] += 1
        figures[order.status] += 1
        outcomes = sorted(charge.outcome for charge in charges.get(key, []))
        message = outbox.get(order.confirmation_key)
        received = receipts.get(message.message_id, 0) if message and message.message_id else 0
        if len(outcomes) > 1 or received > 1:
            doubles += 1
            violations.append(f"order {order.pk}: gateway charges {outcomes}, its email received {received}×")
        if order.status == "pending":
            violations.append(f"order {order.pk} still pending")
            continue
        if order.status == "failed":
            # Every shopper pays with the card that succeeds.
            violations.append(f"order {order.pk} failed: {order.failure_reason or '(no reason)'}")
        elif outcomes != ["succeeded"]:
            violations.append(f"order {order.pk} paid with gateway charges {outcomes or 'none'}")
        elif order.pk not in shop_charges or shop_charges[order.pk].gateway_charge_id != charges[key][0].charge_id:
            violations.append(f"order {order.pk} paid but its Charge does not match the gateway's")
        if message is None or message.status != OutboxStatus.SENT:
            violations.append(f"order {order.pk}: its email is {message.status if message else 'missing'}")
        elif received == 0:
            violations.append(f"order {order.pk}: its email {message.message_id} never reached the SMTP server")
        elif order.status == "paid" and outcomes == ["succeeded"] and received == 1:
            figures["paid once"] += 1
    for key in set(charges) - {str(order.idempotency_key) for order in orders.values()}:
        violations.append(f"gateway charges for idempotency key {key}: no such order")
    return {
        "orders": len(orders),
        "paid": figures["paid"],
        "failed": figures["failed"],
        "pending": figures["pending"],
        "paid once": figures["paid once"],
        "lost": len(lost),
        "double": doubles,
        "answer lost": figures["orders whose checkout answer was lost"],
        "emails received": sum(receipts.values()),
        "violations": violations,
    }


# --- One run -------------------------------------------------------------------------------------


def formation_env(urls: dict[str, str], args: argparse.Namespace, ports: list[int]) -> dict[str, str]:
    """Return the environment of the formation's processes: the runner's (SECRET_KEY, STATIC_ROOT),
    the run's URLs, WEB_CONCURRENCY, FORMATION, text logs, and web's ports (PORT_WEB_<n>)."""
    drop = ("DEBUG", "LOG_FORMAT", "DATABASE_DIRECT_URL", "DATABASE_GATEWAY_URL", "DATABASE_POOL_SIZE", "DYNO")
    env = {key: value for key, value in os.environ.items() if key not in drop and key != "PROCESS_TYPE"}
    env.update(urls)
    env.update(
        WEB_CONCURRENCY=str(args.web_concurrency),
        FORMATION=",".join(f"{kind}={count}" for kind, count in args.formation.items()),
        SITE_URL=f"http://127.0.0.1:{ports[0]}",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        LOG_FORMAT="text",
    )
    env.update({f"PORT_WEB_{index}": str(port) for index, port in enumerate(ports, 1)})
    return env


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def warm_up(webs: list[Process], tally: Tally, mode: str) -> None:
    """Place one order at each web and wait until all are paid. Raise RuntimeError otherwise."""
    from orders.models import Order, OrderStatus

    for number, web in enumerate(webs):
        shopper = Shopper(100 + number, f"http://127.0.0.1:{web.env['PORT']}", tally, time.monotonic() + 60, 0)
        try:
            shopper.purchase(Browser(shopper.base))
        except GaveUp as why:
            raise RuntimeError(f"the warm-up order at {web.name} was not accepted: {why}") from None
    end = time.monotonic() + WARM_UP_DEADLINE
    while Order.objects.filter(status=OrderStatus.PAID).count() < len(webs):
        if time.monotonic() > end:
            raise RuntimeError(f"the {len(webs)} warm-up orders were not paid within {WARM_UP_DEADLINE:g}s")
        time.sleep(0.5)
    say(mode, f"warm-up: {len(webs)} orders paid")


def measure(args: argparse.Namespace, mode: str) -> dict:
    """Run the whole saturation run ``mode`` (direct or pgbouncer); return its figures.

    Raise RuntimeError (or the error of the step) when the run cannot be measured.
    """
    server_url = os.environ["DATABASE_URL"]
    database = f"saturation_{mode}_{os.getpid()}"
    direct_url = with_database(server_url, database)
    root = Path(os.path.realpath(RUNS)) / database
    logs = root / "logs"
    logs.mkdir(parents=True)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        slots = int(admin.execute("SHOW max_connections").fetchone()[0])
    figures: dict = {"mode": mode, "database": database, "logs": str(logs), "max_connections": slots}
    sink = Sink(Clock())
    pgbouncer: ComposePgBouncer | None = None
    formation: Formation | None = None
    sampler: Sampler | None = None
    held: list[psycopg.Connection] = []
    try:
        urls = {"DATABASE_URL": direct_url}
        if mode == "pgbouncer":
            pgbouncer = ComposePgBouncer(
                root, database_url=direct_url, pool_size=args.pool_size, gateway_pool_size=args.gateway_pool_size
            )
            urls = {
                "DATABASE_URL": pgbouncer.ensure(),
                "DATABASE_DIRECT_URL": direct_url,
                "DATABASE_GATEWAY_URL": pgbouncer.gateway_url(),
                "DATABASE_POOL_SIZE": str(args.pool_size + args.gateway_pool_size),
            }
            say(mode, f"PgBouncer on port {pgbouncer.port}: pool {args.pool_size} + gateway {args.gateway_pool_size}")
        redis_url = re.sub(r"/\d*$", "", os.environ["REDIS_URL"]) + f"/{REDIS_DATABASES[mode]}"
        from redis import Redis

        Redis.from_url(redis_url).flushdb()
        sink.start()
        urls.update(REDIS_URL=redis_url, EMAIL_URL=sink.url)
        ports = free_ports(args.formation.get("web", 0))
        env = formation_env(urls, args, ports)

        began = time.monotonic()
        release = subprocess.run(
            ["/bin/sh", "-c", process_commands()["release"]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RELEASE_DEADLINE,
        )
        if release.returncode:
            raise RuntimeError(f"the release failed ({release.returncode}):\n{release.stdout}{release.stderr}")
        say(mode, f"release done in {time.monotonic() - began:.1f}s on database {database}")

        # This process's own queries go to the run's database directly, named formation/bench/….
        os.environ.update(DATABASE_URL=direct_url, REDIS_URL=redis_url, EMAIL_URL=sink.url, PROCESS_TYPE="bench")
        for name in ("DATABASE_DIRECT_URL", "DATABASE_GATEWAY_URL", "DATABASE_POOL_SIZE", "DYNO"):
            os.environ.pop(name, None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        import django

        django.setup()
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # the sink's line per SMTP command
        from orders.models import Order, OrderStatus, Product

        Product.objects.filter(is_active=True).update(stock=1_000_000)

        formation = Formation(args.formation, env, logs)
        console = with_database(pgbouncer.url(), "pgbouncer") if pgbouncer is not None else None
        sampler = Sampler(with_database(server_url, "postgres"), database, console)
        sampler.start()
        figures["boot seconds"] = formation.wait_ready(args.web_concurrency, args.boot_deadline)
        say(mode, f"formation ready in {figures['boot seconds']:.1f}s: {len(formation.processes)} processes")
        warm = Tally(most=args.most_requests)
        warm_up(formation.webs, warm, mode)
        # The window's tally: its requests and answers alone; the warm-up's orders stay in the ledger.
        tally = Tally(most=args.most_requests, submitted=dict(warm.submitted), accepted=list(warm.accepted))

        held = hold_slots(with_database(server_url, "postgres"), args.held)
        sampler.in_window.set()
        start = formation.marks()
        saturated = time.monotonic()
        say(mode, f"{len(held)} slots held by another client; shopping for {args.seconds:g}s")
        bases = [f"http://127.0.0.1:{web.env['PORT']}" for web in formation.webs]
        shoppers = [
            Shopper(number, bases[number % len(bases)], tally, saturated + args.seconds, args.think)
            for number in range(args.shoppers)
        ]
        for shopper in shoppers:
            shopper.start()
        for shopper in shoppers:
            shopper.join(timeout=args.seconds + 60)
        figures["shopping seconds"] = time.monotonic() - saturated
        # The slots stay held for the whole window, also when the shoppers spent their requests first.
        time.sleep(max(0.0, saturated + args.seconds - time.monotonic()))
        figures["pending at the end"] = Order.objects.filter(status=OrderStatus.PENDING).count()
        figures["window seconds"] = time.monotonic() - saturated
        figures["logged"] = formation.logged(start, formation.marks())
        release_slots(held)
        sampler.in_window.clear()
        released = time.monotonic()
        figures["accepted"] = len(tally.accepted) - len(warm.accepted)
        say(
            mode,
            f"slots released after {figures['window seconds']:.1f}s: {tally.requests} requests, "
            f"{tally.unavailable} answered 503, {figures['accepted']} orders accepted, "
            f"{figures['pending at the end']} pending",
        )

        settled = None
        while time.monotonic() - released < args.settle:
            if not unsettled(sink):
                settled = time.monotonic() - released
                break
            time.sleep(0.5)
        figures["settle seconds"] = settled
        say(mode, f"settled in {settled:.1f}s" if settled is not None else f"not settled within {args.settle:g}s")

        ledger = check_ledger(tally, sink)
        if settled is None:
            ledger["violations"].append(f"not settled within {args.settle:g}s of the slots' release")
        failed = failed_jobs(redis_url)
        figures["failed jobs"] = sum(len(jobs) for jobs in failed.values())
        ledger["violations"] += [f"{p}" for p in formation.exited()]
        figures.update(
            ledger=ledger,
            requests=tally.requests,
            unavailable=tally.unavailable,
            retry_after=dict(tally.retry_after),
            errors=dict(tally.errors),
            peak=sampler.peak,
            window_peak=sampler.window_peak,
            pool_waiting=sampler.waiting,
            pool_longest_wait=sampler.longest_wait,
            median=tally.percentile(0.5),
            p95=tally.percentile(0.95),
            peak_by_type=dict(sampler.peak_by_type),
            sampler_errors=dict(sampler.errors),
            held=args.held,
            formula=peak_connections(
                args.formation,
                web_concurrency=args.web_concurrency,
                pool_size=args.pool_size + args.gateway_pool_size if mode == "pgbouncer" else None,
            ),
        )
        return figures
    finally:
        release_slots(held)
        if sampler is not None:
            sampler.close()
        if formation is not None:
            formation.stop()
        sink.stop()
        if pgbouncer is not None:
            pgbouncer.stop()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


# --- The table -----------------------------------------------------------------------------------


def count_of(figures: dict, key: str, *path: str):
    value = figures.get(key)
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
    return value


def milliseconds(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.0f} ms"


def cells(figures: dict, args: argparse.Namespace) -> dict[str, str]:
    """Return the table's cells of one run (its column), by row."""
    if "error" in figures:
        return {"DATABASE_URL": f"not measured: {figures['error'].splitlines()[0][:80]}"}
    ledger = figures["ledger"]
    logged = figures["logged"]
    retry = figures["retry_after"]
    with_retry = sum(count for value, count in retry.items() if value)
    errors = figures["errors"]
    by_type = ", ".join(f"{kind} {count}" for kind, count in sorted(figures["peak_by_type"].items()))
    settle = figures["settle seconds"]
    pooled = figures["mode"] == "pgbouncer"
    return {
        "DATABASE_URL": (
            f"PgBouncer, transaction pooling, pool {args.pool_size} + gateway {args.gateway_pool_size}"
            if pooled
            else "PostgreSQL"
        ),
        "slots held by another client": (
            f"{figures['held']} of {figures['max_connections']} for {figures['window seconds']:.0f} s"
        ),
        "shopper requests (seconds the shoppers went on)": (
            f"{figures['requests']} ({figures['shopping seconds']:.0f} s)"
        ),
        "answered 503 (with Retry-After)": f"{figures['unavailable']} ({with_retry})",
        "answer time, median / 95th percentile": f"{milliseconds(figures['median'])} / {milliseconds(figures['p95'])}",
        "other errors": (
            f"{sum(errors.values())}: " + ", ".join(f"{k} ×{v}" for k, v in sorted(errors.items())) if errors else "0"
        ),
        "orders accepted": str(figures["accepted"]),
        "still pending at the end of the window": str(figures["pending at the end"]),
        "log lines in the window (web + others)": (
            f"{logged.get('web lines', 0) + logged.get('other lines', 0):,}"
            f" ({logged.get('web lines', 0):,} + {logged.get('other lines', 0):,})"
        ),
        "tracebacks / workers' refusal lines in the window": (
            f"{logged.get('tracebacks', 0):,} / {logged.get('refusal lines', 0):,}"
        ),
        "seconds to settle once the slots are back": f"{settle:.1f}" if settle is not None else "not settled",
        "ledger: orders paid once / all orders (warm-up's included)": f"{ledger['paid once']} / {ledger['orders']}",
        "lost / double": f"{ledger['lost']} / {ledger['double']}",
        "RQ failed jobs": str(figures["failed jobs"]),
        "peak PostgreSQL connections in the window / in all (formula)": (
            f"{figures['window_peak']} / {figures['peak']} ({figures['formula']})"
        ),
        "peak of each type (named after the last client)": by_type,
        "PgBouncer: clients waiting at once / longest wait, in the window": (
            f"{figures['pool_waiting']} / {milliseconds(figures['pool_longest_wait'])}" if pooled else "–"
        ),
        "formation ready after": f"{figures['boot seconds']:.0f} s",
    }


def print_table(results: dict[str, dict], args: argparse.Namespace) -> None:
    columns = {mode: cells(figures, args) for mode, figures in results.items()}
    rows = list(dict.fromkeys(row for column in columns.values() for row in column))
    formation = ", ".join(f"{kind}={count}" for kind, count in args.formation.items())
    print(
        f"\nSaturation, {time.strftime('%Y-%m-%d')}: {formation}, WEB_CONCURRENCY={args.web_concurrency}; "
        f"{args.shoppers} shoppers, think {args.think:g} s, at most {args.most_requests} requests\n"
    )
    print("| | " + " | ".join(LABELS[mode] for mode in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for row in rows:
        print(f"| {row} | " + " | ".join(column.get(row, "") for column in columns.values()) + " |")
    for mode, figures in results.items():
        for line in count_of(figures, "ledger", "violations") or []:
            print(f"  {LABELS[mode]}: VIOLATION: {line}")
        for what, count in (figures.get("sampler_errors") or {}).items():
            print(f"  {LABELS[mode]}: {count} samples failed: {what}")
        if "error" in figures:
            print(f"  {LABELS[mode]}: not measured: {figures['error']}")
        print(f"  {LABELS[mode]}: logs in {figures.get('logs')}")


# --- Entry points --------------------------------------------------------------------------------


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def formation_counts(text: str) -> dict[str, int]:
    try:
        return parse_formation(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=positive, default=150.0, help="seconds the slots are held (150)")
    parser.add_argument("--held", type=int, default=110, help="slots the other client holds (110 of 200)")
    parser.add_argument(
        "--formation", type=formation_counts, default=parse_formation(DEFAULT_FORMATION), help=DEFAULT_FORMATION
    )
    parser.add_argument("--web-concurrency", type=int, default=32, help="gunicorn workers per web (32)")
    parser.add_argument("--shoppers", type=int, default=8, help="shopper threads (8)")
    parser.add_argument("--think", type=float, default=0.1, help="seconds before each request (0.1)")
    parser.add_argument("--most-requests", type=int, default=8000, help="requests of all shoppers, at most (8000)")
    parser.add_argument("--settle", type=positive, default=180.0, help="most seconds to wait for settlement (180)")
    parser.add_argument("--boot-deadline", type=positive, default=300.0, help="seconds to start (300)")
    parser.add_argument("--pool-size", type=int, default=16, help="PgBouncer's pool for the app (16, compose's)")
    parser.add_argument("--gateway-pool-size", type=int, default=4, help="its pool for the gateway (4)")
    parser.add_argument("--runs", default=",".join(MODES), help="direct,pgbouncer (both)")
    parser.add_argument("--report", type=Path, help="also write both runs' figures as JSON to this file")
    parser.add_argument("--one-run", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.runs = [mode for mode in MODES if mode in args.runs.split(",")]
    return args


def one_run(args: argparse.Namespace) -> int:
    """Measure the run ``args.one_run`` and write its figures (or its error) as JSON to ``args.result``."""
    # A SIGTERM from the parent (its deadline) unwinds through measure's clean-up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        figures = measure(args, args.one_run)
    except Exception as exc:
        figures = {"mode": args.one_run, "error": f"{type(exc).__name__}: {exc}"}
        say(args.one_run, f"not measured: {figures['error']}")
    args.result.write_text(json.dumps(figures, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.one_run:
        return one_run(args)
    missing = [name for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY") if not os.environ.get(name)]
    if missing:
        sys.exit(
            f"bench/saturation.py: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. "
            "Run it as `make saturation` "
            "(the embedded test servers: python -m embedded test -- python bench/saturation.py)."
        )
    results: dict[str, dict] = {}
    deadline = args.boot_deadline + args.seconds + args.settle + RUN_SLACK
    for mode in args.runs:
        with tempfile.NamedTemporaryFile(prefix=f"saturation-{mode}-", suffix=".json") as result:
            passed = argv if argv is not None else sys.argv[1:]
            child = subprocess.Popen(
                [sys.executable, __file__, *passed, "--one-run", mode, "--result", result.name], cwd=ROOT
            )
            try:
                child.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                child.terminate()
                child.wait(timeout=STOP_GRACE + 60)
            text = Path(result.name).read_text()
            results[mode] = json.loads(text) if text else {"mode": mode, "error": f"exited {child.returncode}"}
    print_table(results, args)
    if args.report:
        args.report.write_text(json.dumps(results, indent=2))
    if any("error" in figures for figures in results.values()):
        return 2
    return 1 if any(figures["ledger"]["violations"] for figures in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
