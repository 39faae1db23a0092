"""Soak: shoppers order without pause while a seeded chaos loop breaks the formation; then the ledger.

    make soak SOAK_SECONDS=120 SOAK_SEED=7
    python bench/soak.py --seconds 120 --seed 7 [--shoppers 4] [--gap 5] [--settle 180] [--report FILE]

The soak owns everything it breaks: its own embedded PostgreSQL and Redis (embedded.servers, data
under ``.formation/soak/<run>/``, deleted at the end; the processes' logs are kept there) and its own
SMTP sink (aiosmtpd, in this process, recording each message and when it came). It runs the
Procfile's release line, then the Procfile's own commands as a supervisor would (each in a session of
its own, restarted when it exits): web ×1, worker ×2, scheduler ×1, mailer ×1 by default.

For ``--seconds`` seconds, ``--shoppers`` HTTP clients go through the storefront as a shopper does
(catalogue, *Add to cart* with its CSRF token, the checkout page, the checkout POST; a lost answer
or a 5xx is retried with the same form, as a shopper pressing reload would; now and then a double
click replays the POST), while a chaos loop drawn from ``random.Random(seed)`` injects, every
``--gap`` seconds on average (uniform 0.5–1.5 ×): kill -9 of a random process of a random type (its
whole process tree, as a container dies; for a worker, half the time only its work horse), SIGTERM
of another (restarted once it has exited), an immediate restart of PostgreSQL (SIGQUIT to the
postmaster: what ``pg_ctl stop -m immediate`` sends, so no checkpoint, crash recovery at start), a
restart of Redis, a pause of the SMTP server (either refusing connections, or holding every
session before MAIL FROM so clients time out) and Redis refusing writes (READONLY) for 2–6 s.
The first faults are one of each kind in a shuffled order, so every kind is injected once the run
is long enough (about 6 × ``--gap`` seconds).

Then, with everything back, it waits (at most ``--settle`` seconds) for every order to be settled
and checks the ledger, exiting 1 on any violation:

- every order a shopper saw accepted (a 303 to its page) exists and is paid, or failed with a
  reason (and only a declined test card fails); no order exists that no shopper submitted; a
  replayed POST leads to the same order; no order exists for a checkout the shopper was told was refused;
- the gateway's ledger (orders.models.SandboxCharge) holds exactly one charge per order (succeeded
  for a paid order, matching its Charge row; declined for a failed one) and no charge of no order;
- the SMTP sink received each order's email (its confirmation, or the notice of a failed payment)
  by its Message-ID at least once, and more than once only inside the documented window
  (docs/order-flow.md, "The one window for a duplicate email": a mailer killed, or PostgreSQL restarted, after the first
  copy was accepted); nothing else was received, and no outbox row failed;
- no job in RQ's failed registries is an order's job whose order is unsettled;
- every process is running and ready again;
- no request answered a 5xx other than 503 (a backing service away is a 503 with Retry-After).

Timings: the formation runs with short recovery knobs (SOAK_TIMINGS below) so that recoveries
happen within the run: with the defaults a stuck order waits ~95 s and a leased email ~61 s.
``--default-timings`` keeps the shop's defaults (give ``--settle`` several minutes then).
"""

import argparse
import asyncio
import collections
import contextlib
import hashlib
import http.client
import itertools
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import psutil
from aiosmtpd.controller import Controller
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.queues import DEFAULT_QUEUE, MAINTENANCE_QUEUE  # noqa: E402
from embedded.faketime import clock_offset_env  # noqa: E402
from embedded.harness import FAST  # noqa: E402
from embedded.servers import Postgres, Redis, free_port, pid_alive, wait_for  # noqa: E402
from embedded.shopper import Browser, checkout_data, hidden, page_lines  # noqa: E402
from embedded.silent_link import SilentLink, unavailable_reason  # noqa: E402
from processes.procfile import READY_LINES, process_commands, web_healthy  # noqa: E402

RUNS = ROOT / ".formation" / "soak"
# The formation under test: processes per Procfile type (release runs once, before).
FORMATION = {"web": 1, "worker": 2, "scheduler": 1, "mailer": 1}
# Short recovery knobs (seconds): the process tests' (embedded.harness.FAST), so a stuck order is
# swept within ~10 s and an orphaned email lease expires within 12 s (the lease must be at least
# 6 × EMAIL_TIMEOUT, checked by the mailer at start). The soak keeps its own values where it always
# had them (ORDER_STUCK_AFTER, MAILER_POLL_INTERVAL, two web workers) and leaves
# STARTUP_RETRY_SECONDS at the shop's default (30 s): a process it restarts while PostgreSQL or
# Redis is being restarted waits for them instead of exiting after 2 s.
SOAK_TIMINGS = {
    **{name: value for name, value in FAST.items() if name != "STARTUP_RETRY_SECONDS"},
    "ORDER_STUCK_AFTER": "3",
    "MAILER_POLL_INTERVAL": "0.5",
    "WEB_CONCURRENCY": "2",
    # An order whose payment call timed out (the slow-provider fault) is tried again 2, 4, 8 … s later.
    "PAYMENT_RETRY_BASE": "2",
}
KILL, TERM, PG, REDIS, SMTP = "kill -9", "SIGTERM", "PostgreSQL restart", "Redis restart", "SMTP pause"
READ_ONLY = "read-only database"  # PostgreSQL answers but refuses writes (a standby, disk-full mode)
# One mailer restarted as on a host whose clock is CLOCK_OFFSET s behind (libfaketime),
# for CLOCK_SECONDS, then restarted on the true clock: leases and due times use PostgreSQL's clock.
# Behind, so the others are as far ahead of it (with each host's clock, they took its leases as
# expired); never ahead: libfaketime moves the monotonic clock too, and a process ahead waits
# out the offset in its timed waits (embedded.faketime.clock_offset_env) and overstays its stop.
CLOCK, CLOCK_OFFSET, CLOCK_SECONDS = "clock offset", 90, 20.0
# One worker restarted as if its payment provider answered after 3 s while its call is bounded at
# 1 s, for SLOW_SECONDS: each charge is taken, the call times out, the order backs off and is
# settled by a later try with the same idempotency key, charged once.
SLOW, SLOW_SECONDS = "slow provider", 20.0
SLOW_PROVIDER_ENV = {"PAYMENT_SANDBOX_LATENCY_MS": "3000", "PAYMENT_TIMEOUT": "1"}
# Redis refusing writes (READONLY, as after a failover left the clients on a replica) for a few seconds.
REDIS_READONLY = "Redis READONLY"
# Redis losing every key at once (FLUSHALL: a restart without persistence, a failover to an empty
# node): the sweep re-enqueues the pending orders whose jobs went, the outbox is in PostgreSQL.
REDIS_FLUSH = "Redis FLUSHALL"
# Redis with an evicting maxmemory-policy (allkeys-lru) for a few seconds, then noeviction again: the
# running processes are not ready meanwhile; no process is restarted during the window.
REDIS_EVICTING = "Redis evicting policy"
# The mailer reaches PostgreSQL through a link that the fault makes silent for 4-20 s (packets
# dropped, no reset: a NAT entry expired, a host vanished): embedded.silent_link, root only. Its
# keepalives end a connection stuck in it (DATABASE_SILENCE_TIMEOUT) and it reconnects once healed.
FROZEN = "frozen connection"
FROZEN_TYPES = ("mailer",)
FAULT_KINDS = (
    *(KILL, TERM, PG, REDIS, SMTP, READ_ONLY, CLOCK, SLOW),
    *(REDIS_READONLY, REDIS_FLUSH, REDIS_EVICTING, FROZEN),
)
# Seconds: a process told to stop gets RQ_JOB_TIMEOUT (60) + 10 before it is killed, as `make run`
# does (FORMATION_KILL_WAIT); a (re)started process must be ready within READY_DEADLINE.
STOP_GRACE = 70.0
READY_DEADLINE = 90.0
# Seconds a shopper keeps retrying one step (the checkout POST: until it knows the outcome).
STEP_PATIENCE = 20.0
CHECKOUT_PATIENCE = 60.0
DECLINE_SHARE = 0.1  # of checkouts paid with the test card that is declined
REPLAY_SHARE = 0.1  # of accepted checkouts whose POST is sent again (a double click)
NETWORK_ERRORS = (OSError, http.client.HTTPException)

# Piped (make, CI, a test), rich would wrap at 80 columns: the ledger reads better at 120.
console = Console(highlight=False, log_path=False, width=None if sys.stdout.isatty() else 120)


class Clock:
    """Seconds since the soak started (monotonic), for the fault log and the sink's receipts."""

    def __init__(self) -> None:
        self.began = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.began


# --- The SMTP sink -------------------------------------------------------------------------


@dataclass
class Receipt:
    at: float  # seconds since the soak started
    message_id: str
    to: str
    subject: str


class Sink:
    """aiosmtpd SMTP server on 127.0.0.1 that records every message and can be paused.

    ``pause("refuse")`` closes the listening socket (connections refused) until ``resume()``;
    ``pause("stall")`` keeps accepting but holds each session before MAIL FROM is answered, so a
    client waits until its own timeout. Neither holds a message after its data was received: a
    message is recorded exactly when its 250 is given.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.port = free_port()
        self.receipts: list[Receipt] = []
        self.lock = threading.Lock()
        self.stalled = threading.Event()
        self.controller: Controller | None = None
        self.paused: str | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        # A stopped Controller has closed its event loop: each start needs a new one.
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def pause(self, how: str) -> None:
        """Pause as ``how`` says: "refuse" (stop listening) or "stall" (hold sessions before MAIL)."""
        self.paused = how
        self.stalled.set()
        if how == "refuse":
            # Held first, so that closing cancels no session between its recorded message and its 250.
            time.sleep(0.3)
            self.stop()

    def resume(self) -> None:
        if self.paused == "refuse":
            self.start()
        self.stalled.clear()
        self.paused = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802 - aiosmtpd's hook
        while self.stalled.is_set():
            await asyncio.sleep(0.05)
        envelope.mail_from = address  # a MAIL hook must set these itself (aiosmtpd's contract)
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = message_from_bytes(envelope.content, policy=default_policy)
        receipt = Receipt(
            self.clock.now(),
            str(message.get("Message-ID", "")).strip(),
            ", ".join(envelope.rcpt_tos),
            message["Subject"],
        )
        with self.lock:
            self.receipts.append(receipt)
        return "250 Message accepted for delivery"

    def received(self) -> list[Receipt]:
        with self.lock:
            return list(self.receipts)


# --- Backing services ----------------------------------------------------------------------


class Services:
    """The soak's own PostgreSQL, Redis and SMTP sink, which the chaos loop restarts and pauses."""

    def __init__(self, root: Path, clock: Clock) -> None:
        # Durable: an immediate restart is a crash, and crash recovery is what is being tested.
        self.postgres = Postgres(root, durable=True)
        self.redis = Redis(root, durable=True)
        self.sink = Sink(clock)
        self.urls: dict[str, str] = {}
        self.link: SilentLink | None = None

    def start(self) -> bool:
        """Start the three servers; return True when PostgreSQL started from a migrated template."""
        template = self.template()
        if template.exists():
            # cp -a keeps owner and modes: PostgreSQL refuses a data folder it does not own.
            subprocess.run(["cp", "-a", str(template), str(self.postgres.data)], check=True)
        self.urls["DATABASE_URL"] = self.postgres.ensure()
        self.urls["REDIS_URL"] = self.redis.ensure()
        self.sink.start()
        self.urls["EMAIL_URL"] = self.sink.url
        return template.exists()

    def linked_database_url(self) -> str | None:
        """Open a silent link to PostgreSQL (the frozen-connection fault's) and return DATABASE_URL
        through it, or None when no link can be made here (not root, no ``ip``: the fault is left
        out of the menu)."""
        if unavailable_reason() is not None:
            return None
        self.link = SilentLink(("127.0.0.1", self.postgres.port))
        try:
            self.link.open()
        except Exception:
            self.link.close()
            self.link = None
            raise
        url = urllib.parse.urlsplit(self.urls["DATABASE_URL"])
        host, port = self.link.address
        netloc = url.netloc.rsplit("@", 1)[0] + f"@{host}:{port}" if "@" in url.netloc else f"{host}:{port}"
        return urllib.parse.urlunsplit(url._replace(netloc=netloc))

    def freeze_link(self, seconds: float) -> None:
        """Drop every packet on the link to PostgreSQL, silently, and pass them again ``seconds``
        later (a timer: the chaos goes on meanwhile)."""
        link = self.link
        link.freeze()

        def heal() -> None:
            if self.link is link:  # not closed meanwhile (the soak's end)
                link.heal()

        timer = threading.Timer(seconds, heal)
        timer.daemon = True
        timer.start()

    def template(self) -> Path:
        """Return where a data folder migrated by this checkout's release phase is kept between runs.

        Keyed by PostgreSQL's binary and the migrations and requirements, so a change to any of them
        builds a new one: initdb and migrating from scratch take ~10 s of a short run on a busy machine.
        """
        digest = hashlib.sha256(self.postgres._bin("postgres").encode())
        for path in sorted([*ROOT.glob("*/migrations/*.py"), ROOT / "requirements.txt"]):
            digest.update(path.name.encode() + path.read_bytes())
        return RUNS / f"postgres-template-{digest.hexdigest()[:16]}"

    def save_template(self) -> None:
        """Keep the data folder, just migrated, as the template of later runs: stop PostgreSQL (fast
        shutdown, a clean checkpoint), copy it, start it again."""
        self._stop(self.postgres, signal.SIGINT)
        partial = RUNS / f"postgres-template-partial-{os.getpid()}"
        subprocess.run(["cp", "-a", str(self.postgres.data), str(partial)], check=True)
        with contextlib.suppress(OSError):  # another run saved it first: theirs is as good
            partial.rename(self.template())
        shutil.rmtree(partial, ignore_errors=True)
        self._start(self.postgres)

    def offset_clock(self, supervisor: "Supervisor", slot: "Slot", offset: str) -> str | None:
        """Restart ``slot`` (SIGTERM, then the supervisor) with its clock off by ``offset``, and
        CLOCK_SECONDS later on the true clock again; return what was hit (None: it was stopping)."""
        hit = self._restart_for(supervisor, slot, CLOCK, clock_offset_env(ROOT / ".formation", offset), CLOCK_SECONDS)
        return hit and f"{hit} {offset} for {CLOCK_SECONDS:g}s"

    def slow_provider(self, supervisor: "Supervisor", slot: "Slot") -> str | None:
        """Restart the worker ``slot`` as if its payment provider answered slower than its payment
        call's bound (the sandbox's latency above PAYMENT_TIMEOUT: the charge is taken, the call
        times out) for SLOW_SECONDS, then as before; return what was hit (None: it was stopping)."""
        hit = self._restart_for(supervisor, slot, SLOW, SLOW_PROVIDER_ENV, SLOW_SECONDS)
        return hit and f"{hit} for {SLOW_SECONDS:g}s"

    @staticmethod
    def _restart_for(
        supervisor: "Supervisor", slot: "Slot", kind: str, env: dict[str, str], seconds: float
    ) -> str | None:
        """Restart ``slot`` with ``env`` (fault ``kind``'s) over its own, and ``seconds`` later
        without it (other faults' environments stay); return the slot's name, or None when it was
        stopping (nothing injected)."""

        def apply(overrides: dict[str, dict[str, str]]) -> None:
            slot.overrides = overrides
            slot.env = {**slot.base_env, **{k: v for layer in overrides.values() for k, v in layer.items()}}

        before = dict(slot.overrides)
        apply({**before, kind: env})
        if supervisor.terminate(slot) is None:
            apply(before)
            return None

        def restore() -> None:
            apply({name: layer for name, layer in slot.overrides.items() if name != kind})
            supervisor.terminate(slot)

        timer = threading.Timer(seconds, restore)
        timer.daemon = True
        timer.start()
        return slot.name

    def restart_postgres(self, down: float) -> None:
        """SIGQUIT the postmaster (``pg_ctl stop -m immediate``), wait ``down`` seconds, start it again."""
        self._stop(self.postgres, signal.SIGQUIT)
        time.sleep(down)
        self._start(self.postgres)

    def read_only_postgres(self, seconds: float) -> None:
        """Make PostgreSQL refuse writes for ``seconds``: ``ALTER SYSTEM SET
        default_transaction_read_only = on`` and a reload (every session, open or new, takes it),
        as a provider's disk-full mode does; then RESET and reload. As the superuser ``postgres``."""
        with self.postgres._superuser("postgres") as conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
            try:
                time.sleep(seconds)
            finally:
                conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
                conn.execute("SELECT pg_reload_conf()")

    def restart_redis(self, down: float) -> None:
        """SIGTERM Redis (it writes its append-only file and exits), wait ``down`` seconds, start it."""
        self._stop(self.redis, signal.SIGTERM)
        time.sleep(down)
        self._start(self.redis)

    def redis_readonly(self, seconds: float) -> None:
        """Make Redis a replica of a closed port on 127.0.0.1 (every write answers READONLY) for
        ``seconds``, then a master again (``REPLICAOF NO ONE``); its data is kept throughout."""
        import redis  # only this fault needs a client of its own

        client = redis.Redis.from_url(self.urls["REDIS_URL"])
        try:
            client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
            time.sleep(seconds)
        finally:
            client.execute_command("REPLICAOF", "NO", "ONE")
            client.close()

    def redis_flush(self) -> None:
        """Empty Redis (``FLUSHALL``), as a restart without persistence or a failover to an empty node does."""
        import redis  # only the Redis faults need a client of their own

        with redis.Redis.from_url(self.urls["REDIS_URL"]) as client:
            client.flushall()

    def redis_evicting(self, supervisor: "Supervisor", seconds: float) -> None:
        """Set Redis's ``maxmemory-policy`` to ``allkeys-lru`` for ``seconds``, then ``noeviction`` again.

        The supervisor restarts nothing meanwhile (its lock is held): a worker or scheduler started
        in the window refuses the policy and exits 1 by design (core.preflight.redis_policy_problem).
        One already starting when the window opens may still meet it: a finding, restarted after.
        """
        import redis  # only the Redis faults need a client of their own

        with supervisor.lock, redis.Redis.from_url(self.urls["REDIS_URL"]) as client:
            client.config_set("maxmemory-policy", "allkeys-lru")
            try:
                time.sleep(seconds)
            finally:
                client.config_set("maxmemory-policy", "noeviction")

    @staticmethod
    def _stop(server, sig: int) -> None:
        os.kill(server.pid, sig)
        wait_for(lambda: not pid_alive(server.pid), 60, f"{server.label} to exit", server.log)

    @staticmethod
    def _start(server) -> None:
        server.pid = server.launch(server.port).pid
        wait_for(server.ready, 60, server.label, server.log)

    def close(self) -> None:
        if self.link is not None:
            link, self.link = self.link, None
            link.close()
        self.sink.stop()
        for server in (self.redis, self.postgres):
            if server.pid and pid_alive(server.pid):
                server.started_here = True
                server.stop()


# --- The formation, supervised ---------------------------------------------------------------


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group and every descendant (RQ's work horse has a session of
    its own), as a container's end kills everything in it."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for process in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


class Slot:
    """One process of the formation (``worker.2``), started again whenever it exits."""

    def __init__(self, kind: str, index: int, command: str, env: dict[str, str], logs: Path) -> None:
        self.kind, self.name = kind, f"{kind}.{index}"
        self.command, self.env = command, env
        # Environment a fault lays over ``env`` for a while (a clock offset, a slow provider), by
        # fault kind: faults on one slot overlap, and each takes back only its own.
        self.base_env = dict(env)
        self.overrides: dict[str, dict[str, str]] = {}
        self.log_path = logs / f"{self.name}.log"
        self.popen: subprocess.Popen | None = None
        self.offset = 0
        self.started = 0.0
        self.ready = False
        self.stopping: str | None = None  # the fault that stopped it: KILL or TERM; None while running
        self.term_deadline: float | None = None
        self.restart_at: float | None = None
        self.crashes = 0  # exits nobody asked for, in a row (restart backoff)

    def start(self, clock: Clock) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"--- soak {clock.now():.1f}s: starting {self.name}\n".encode())
            log.flush()
            self.offset = log.tell()
            self.popen = subprocess.Popen(
                ["/bin/sh", "-c", self.command],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.ready = False
        self.stopping = self.term_deadline = self.restart_at = None

    def is_ready(self) -> bool:
        if not self.ready:
            if self.kind == "web":
                self.ready = web_healthy(self.env["PORT"])
            else:
                with open(self.log_path, "rb") as log:
                    log.seek(self.offset)
                    self.ready = READY_LINES[self.kind].encode() in log.read()
        return self.ready

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Supervisor:
    """Start the formation's processes and restart each one that exits, as a supervisor would.

    A process stopped by a fault is started again at once (after a SIGTERM: once it has exited,
    or killed after STOP_GRACE seconds); one that exits on its own is restarted with a backoff
    of 1 s doubling to 10 s and recorded as a finding.
    """

    def __init__(self, slots: list[Slot], clock: Clock) -> None:
        self.slots, self.clock = slots, clock
        self.lock = threading.Lock()
        self.findings: list[str] = []
        self.restarts: collections.Counter = collections.Counter()
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        for slot in self.slots:
            slot.start(self.clock)
        self.thread.start()

    def all_ready(self) -> bool:
        with self.lock:
            return all(slot.alive() and slot.is_ready() for slot in self.slots)

    def of_kind(self, kind: str) -> list[Slot]:
        return [slot for slot in self.slots if slot.kind == kind]

    def kill(self, slot: Slot, *, horse_only: bool) -> str | None:
        """kill -9 ``slot``'s process tree, or only its work horse when it has one and ``horse_only``;
        return what was killed (None: it was already stopping)."""
        with self.lock:
            if not slot.alive() or slot.stopping:
                return None
            if horse_only:
                try:
                    children = psutil.Process(slot.popen.pid).children()
                except psutil.NoSuchProcess:
                    children = []
                if children:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        children[0].kill()
                    return f"{slot.name}'s work horse (pid {children[0].pid})"
            slot.stopping = KILL
            kill_tree(slot.popen.pid)
            return f"{slot.name} (pid {slot.popen.pid})"

    def terminate(self, slot: Slot) -> str | None:
        """SIGTERM ``slot``'s process (as Kubernetes and docker stop a container); return its name
        (None: it was already stopping). The supervisor restarts it once it has exited."""
        with self.lock:
            if not slot.alive() or slot.stopping:
                return None
            slot.stopping = TERM
            slot.term_deadline = time.monotonic() + STOP_GRACE
            slot.popen.send_signal(signal.SIGTERM)
            return f"{slot.name} (pid {slot.popen.pid})"

    def _run(self) -> None:
        while not self.closing.is_set():
            with self.lock:
                for slot in self.slots:
                    self._watch(slot)
            self.closing.wait(0.2)

    def _watch(self, slot: Slot) -> None:
        now = time.monotonic()
        if slot.alive():
            if slot.term_deadline and now > slot.term_deadline:
                self.findings.append(f"{slot.name} did not exit within {STOP_GRACE:g}s of SIGTERM: killed")
                kill_tree(slot.popen.pid)
            elif not slot.ready and slot.is_ready():
                slot.crashes = 0
            elif not slot.ready and now - slot.started > READY_DEADLINE:
                self.findings.append(f"{slot.name} not ready {READY_DEADLINE:g}s after its start: killed")
                kill_tree(slot.popen.pid)
            return
        if slot.restart_at is None:
            code = slot.popen.returncode
            if slot.stopping == TERM and code != 0:
                self.findings.append(f"{slot.name} exited {code} after SIGTERM (expected 0)")
            elif slot.stopping is None:
                slot.crashes += 1
                self.findings.append(
                    f"{self.clock.now():.1f}s {slot.name} exited {code} on its own; last lines:\n{slot.tail(8)}"
                )
            backoff = 0.0 if slot.stopping else min(10.0, 2.0 ** (slot.crashes - 1))
            # A killed process group may still hold the port a moment (gunicorn's workers).
            slot.restart_at = now + max(backoff, 0.3)
            return
        if now >= slot.restart_at:
            self.restarts[slot.kind] += 1
            slot.start(self.clock)

    def close(self) -> None:
        """Stop restarting; SIGTERM every process, kill what is left after 20 s (and descendants).

        Only processes known to be this soak's are signalled: a pid is killed while it is not yet
        reaped, and descendants through psutil, which refuses a pid that was reused.
        """
        self.closing.set()
        self.thread.join(timeout=5)
        descendants = []
        for slot in self.slots:
            if slot.alive():
                with contextlib.suppress(psutil.NoSuchProcess):
                    descendants += psutil.Process(slot.popen.pid).children(recursive=True)
                slot.popen.send_signal(signal.SIGTERM)
        end = time.monotonic() + 20
        for slot in self.slots:
            if slot.popen is None:
                continue
            try:
                slot.popen.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_tree(slot.popen.pid)
                slot.popen.wait(timeout=10)
        for process in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


# --- Shoppers ----------------------------------------------------------------------------------


class Abandoned(Exception):
    """A shopper gave up a purchase at a step (its message says where and why)."""


@dataclass
class Checkout:
    """One checkout POST (identified by its token): what was asked and what the shopper saw."""

    token: str
    payment_method: str
    outcome: str = "unknown"  # accepted, refused (400), conflict (409), abandoned
    order_id: str | None = None
    detail: str = ""


@dataclass
class ShopperLedger:
    """What the shoppers saw, shared by their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    checkouts: dict[str, Checkout] = field(default_factory=dict)
    errors: collections.Counter = field(default_factory=collections.Counter)  # (step, error) -> count
    requests: int = 0
    violations: list[str] = field(default_factory=list)

    def accepted(self) -> int:
        with self.lock:
            return sum(1 for checkout in self.checkouts.values() if checkout.outcome == "accepted")


class Shopper(threading.Thread):
    """A shopper buying in a loop: catalogue, add to cart (1–2 products), checkout page, checkout POST."""

    def __init__(self, number: int, base: str, skus: list[str], ledger: ShopperLedger, stop: threading.Event, seed):
        super().__init__(name=f"shopper-{number}", daemon=True)
        self.number, self.base, self.skus = number, base, skus
        self.ledger, self.stop = ledger, stop
        self.random = random.Random(f"{seed}-shopper-{number}")
        self.browser = None

    def run(self) -> None:
        purchases = 0
        while not self.stop.is_set():
            if purchases % 5 == 0:  # a new shopper (cookies, session) now and then
                self.browser = Browser(self.base)
            purchases += 1
            try:
                self.purchase()
            except Abandoned as why:
                with self.ledger.lock:
                    self.ledger.errors[("abandoned", str(why))] += 1
            except Exception as exc:  # an unexpected page is counted, the shopper goes on
                with self.ledger.lock:
                    self.ledger.errors[("unexpected", f"{type(exc).__name__}: {exc}"[:120])] += 1
            self.stop.wait(self.random.uniform(0.1, 0.6))

    def call(self, step: str, path: str, data: dict | None = None, *, ok: tuple, patience: float) -> tuple:
        """Request ``path`` until it answers a status in ``ok``; retry network errors and 5xx (and a
        CSRF 403 right after a web restart) for ``patience`` seconds. Raise Abandoned otherwise."""
        end = time.monotonic() + patience
        delay = 0.2
        while True:
            try:
                status, headers, body = self.browser.request(path, data)
                error = None if status in ok else str(status)
            except NETWORK_ERRORS as exc:
                status, headers, body, error = 0, {}, "", type(getattr(exc, "reason", exc)).__name__
            with self.ledger.lock:
                self.ledger.requests += 1
                if error:
                    self.ledger.errors[(step, error)] += 1
                if status >= 500 and status != 503:
                    # A backing service away is a 503 with Retry-After; anything else is a bug.
                    self.ledger.violations.append(f"{step}: {path} answered {status}, not 503")
            if error is None:
                return status, headers, body
            retryable = status == 0 or status >= 500
            if not retryable or time.monotonic() > end or (self.stop.is_set() and step != "checkout"):
                raise Abandoned(f"{step}: {error}")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def purchase(self) -> None:
        page = self.call("catalogue", "/", ok=(200,), patience=STEP_PATIENCE)[2]
        csrf = hidden("csrfmiddlewaretoken", page)
        for sku in self.random.sample(self.skus, self.random.choice((1, 1, 2))):
            form = {"product": sku, "quantity": self.random.randint(1, 3), "csrfmiddlewaretoken": csrf}
            self.call("add to cart", "/cart/add/", form, ok=(303,), patience=STEP_PATIENCE)
        page = self.call("checkout page", "/checkout/", ok=(200,), patience=STEP_PATIENCE)[2]
        lines = page_lines(page)
        if not lines:
            raise Abandoned("checkout page: empty cart")
        method = "pm_card_chargeDeclined" if self.random.random() < DECLINE_SHARE else "pm_card_visa"
        token = hidden("token", page)
        form = {
            **checkout_data(token=token, email=f"soak{self.number}@example.com", lines=lines, payment_method=method),
            "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
        }
        checkout = Checkout(token=token, payment_method=method)
        with self.ledger.lock:
            self.ledger.checkouts[token] = checkout
        try:
            status, headers, body = self.call(
                "checkout", "/checkout/", form, ok=(303, 400, 409), patience=CHECKOUT_PATIENCE
            )
        except Abandoned as why:
            checkout.outcome, checkout.detail = "abandoned", str(why)
            raise
        if status == 303:
            checkout.outcome, checkout.order_id = "accepted", order_from(headers)
        elif status == 409:
            checkout.outcome = "conflict"
            with self.ledger.lock:
                self.ledger.violations.append(f"checkout {token}: the same form answered 409 (another order?)")
        else:
            checkout.outcome, checkout.detail = "refused", error_summary(body)
        if status == 303 and self.random.random() < REPLAY_SHARE:
            again = self.call("checkout replay", "/checkout/", form, ok=(303, 409, 400), patience=STEP_PATIENCE)
            if again[0] != 303 or order_from(again[1]) != checkout.order_id:
                with self.ledger.lock:
                    self.ledger.violations.append(
                        f"checkout {token}: its replay answered {again[0]} {order_from(again[1])}, "
                        f"not 303 to order {checkout.order_id}"
                    )


def order_from(headers: dict) -> str | None:
    """Return the order id of a 303's Location (``/orders/<uuid>/``), or None."""
    match = re.search(r"/orders/([0-9a-f-]{36})/", headers.get("Location", ""))
    return match.group(1) if match else None


def error_summary(page: str) -> str:
    """Return the text of a refused checkout's error summary (its first list item), cut to 100 characters."""
    match = re.search(r"<li[^>]*>(.*?)</li>", page.split("error-summary", 1)[-1], re.S)
    return re.sub(r"<[^>]+>|\s+", " ", match.group(1)).strip()[:100] if match else "(no error summary)"


# --- Chaos --------------------------------------------------------------------------------------


@dataclass
class Fault:
    at: float  # seconds since the soak started
    kind: str
    target: str
    took: float = 0.0  # seconds the injection itself took (a restart's downtime included)
    lasts: float = 0.0  # seconds the fault goes on after the injection returned (a frozen link's timer)


class Chaos(threading.Thread):
    """Inject faults at random times from ``random.Random(seed)`` until ``stop`` is set."""

    def __init__(self, seed: int, gap: float, seconds: float, services, supervisor: Supervisor, clock: Clock, stop):
        super().__init__(name="chaos", daemon=True)
        self.seconds = seconds
        self.began = clock.now()
        self.random = random.Random(seed)
        self.gap, self.services, self.supervisor, self.clock, self.stop = gap, services, supervisor, clock, stop
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.smtp_resume: threading.Timer | None = None
        # A frozen connection needs a silent link, which needs root: out of the menu without one.
        self.kinds = tuple(kind for kind in FAULT_KINDS if kind != FROZEN or services.link is not None)
        self.last_target: str | None = None

    def run(self) -> None:
        first = list(self.kinds)
        self.random.shuffle(first)
        while True:
            wait = self.random.uniform(0.5 * self.gap, 1.5 * self.gap)
            if first:  # leave room for every kind before the end of a short run
                wait = min(wait, max(0.5, (self.seconds - self.clock.now() + self.began) / (len(first) + 1)))
            if self.stop.wait(wait):
                break
            from_first = bool(first)
            kind = first.pop(0) if first else self.random.choice(self.kinds)
            began = self.clock.now()
            self.lasts = 0.0
            try:
                target = self.inject(kind)
            except Exception as exc:  # a failed injection is reported, the soak goes on
                self.errors.append(f"{began:.1f}s {kind}: {type(exc).__name__}: {exc}")
                continue
            if target is None:  # its target was already down: nothing injected
                if from_first:  # every kind is still injected once: this one again later
                    first.append(kind)
                continue
            fault = Fault(began, kind, target, self.clock.now() - began, self.lasts)
            self.faults.append(fault)
            console.log(f"[bold red]{kind}[/] {target}" + (f" ({fault.took:.1f}s)" if fault.took >= 0.1 else ""))
        self.resume_smtp()

    def inject(self, kind: str) -> str | None:
        """Inject one fault of ``kind``; return what it hit, or None when its target was already down
        (a process stopping, the SMTP server paused). Every draw happens whatever the state,
        so one seed gives one sequence of decisions."""
        kind_pick = self.random.choice(sorted(FORMATION))
        index_pick = self.random.random()
        horse_only = self.random.random() < 0.5
        down = self.random.uniform(0.0, 3.0)
        pause = self.random.uniform(2.0, 10.0)
        how = self.random.choice(("refuse", "stall"))
        read_only_for = self.random.uniform(2.0, 6.0)  # PostgreSQL or Redis refusing writes, or evicting
        if kind == CLOCK:
            # The mailer, whose leases a skewed clock would steal. Not a worker: under libfaketime,
            # which moves the monotonic clock too, workers overstayed their stop grace in RQ's
            # timed waits (four at +90 s, one at -90 s in two 10-minute soaks), a fault of the
            # tool, not of a skewed host.
            slots = self.supervisor.of_kind("mailer")
            return self.services.offset_clock(self.supervisor, slots[int(index_pick * len(slots))], f"-{CLOCK_OFFSET}s")
        if kind == SLOW:
            slots = self.supervisor.of_kind("worker")
            return self.services.slow_provider(self.supervisor, slots[int(index_pick * len(slots))])
        if kind in (KILL, TERM):
            slots = self.supervisor.of_kind(kind_pick)
            slot = slots[int(index_pick * len(slots))]
            if kind == TERM and slot.name == self.last_target:  # "another" process than the last one hit
                others = [other for other in self.supervisor.slots if other.name != slot.name]
                slot = others[int(index_pick * len(others))]
            self.last_target = slot.name
            if kind == KILL:
                return self.supervisor.kill(slot, horse_only=horse_only and slot.kind == "worker")
            return self.supervisor.terminate(slot)
        if kind == PG:
            self.services.restart_postgres(down)
            return f"immediate, down {down:.1f}s"
        if kind == REDIS:
            self.services.restart_redis(down)
            return f"down {down:.1f}s"
        if kind == READ_ONLY:
            self.services.read_only_postgres(read_only_for)
            return f"for {read_only_for:.1f}s"
        if kind == FROZEN:
            self.lasts = 2 * pause
            self.services.freeze_link(2 * pause)
            return f"{'+'.join(FROZEN_TYPES)}'s PostgreSQL for {2 * pause:.1f}s"
        if kind == REDIS_READONLY:
            self.services.redis_readonly(read_only_for)
            return f"for {read_only_for:.1f}s"
        if kind == REDIS_FLUSH:
            self.services.redis_flush()
            return "every key"
        if kind == REDIS_EVICTING:
            self.services.redis_evicting(self.supervisor, read_only_for)
            return f"allkeys-lru for {read_only_for:.1f}s"
        if self.services.sink.paused:
            return None
        self.services.sink.pause(how)
        self.smtp_resume = threading.Timer(pause, self.resume_smtp)
        self.smtp_resume.start()
        return f"{how} for {pause:.1f}s"

    def resume_smtp(self) -> None:
        if self.smtp_resume is not None:
            self.smtp_resume.cancel()
        if self.services.sink.paused:
            self.services.sink.resume()
            console.log("SMTP resumed")

    def counts(self) -> dict[str, int]:
        return {kind: sum(1 for fault in self.faults if fault.kind == kind) for kind in self.kinds}


# --- The ledger ---------------------------------------------------------------------------------


def database_retry(call, attempts: int = 5):
    """Run ``call()`` against the database, reconnecting after a lost connection (a restart)."""
    from django.db import InterfaceError, OperationalError, connections

    for attempt in range(attempts):
        try:
            return call()
        except (OperationalError, InterfaceError):
            connections.close_all()
            if attempt == attempts - 1:
                raise
            time.sleep(1)


def unsettled(sink: Sink) -> list[str]:
    """Return the ids of the orders not settled yet: pending, or whose email is not sent and received."""
    from mailer.models import OutboxMessage, OutboxStatus
    from orders.models import Order

    received = {receipt.message_id for receipt in sink.received()}
    sent = {message.key: message.message_id for message in OutboxMessage.objects.filter(status=OutboxStatus.SENT)}
    waiting = []
    for order in Order.objects.only("id", "status"):
        message_id = sent.get(order.confirmation_key)
        if order.status == "pending" or message_id is None or message_id not in received:
            waiting.append(str(order.pk))
    return waiting


def failed_jobs(redis_url: str) -> dict[str, list[tuple[str, str]]]:
    """Return, per queue, the (job id, its exception's line: ``Type: message``) in RQ's failed job registry."""
    from redis import Redis as RedisClient
    from rq import Queue
    from rq.job import Job

    connection = RedisClient.from_url(redis_url)
    found = {}
    for name in (DEFAULT_QUEUE, MAINTENANCE_QUEUE):
        registry = Queue(name, connection=connection).failed_job_registry
        jobs = []
        for job_id in registry.get_job_ids():
            try:
                job = Job.fetch(job_id, connection=connection)
                result = job.latest_result()
                text = (result.exc_string if result else None) or job.exc_info or ""
            except Exception:  # a job whose hash expired still counts
                text = ""
            # The traceback's last "Type: message" line (a message may go on over several lines), else
            # RQ's own note ("Moved to FailedJobRegistry, due to AbandonedJobError, at <time>").
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            raised = [line for line in lines if re.match(r"[A-Za-z_][\w.]*: ", line)] or lines
            error = re.sub(r", at \d{4}-\d\d-\d\d[ T][\d:.+-]+", "", raised[-1])[:160] if raised else ""
            jobs.append((job_id, error or "(no error recorded)"))
        found[name] = jobs
    return found


@dataclass
class Ledger:
    """The checked outcome: figures to print and the violations found."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


# Faults that leave the mailer without PostgreSQL for a while: a message the SMTP server accepted
# then may not be recorded as sent before its lease ends (docs/order-flow.md, the one window for a
# duplicate email: "PostgreSQL unreachable for the whole rest of the lease").
POSTGRES_AWAY = {
    PG: "PostgreSQL restarted",
    READ_ONLY: "PostgreSQL read-only",
    FROZEN: "the mailer's link to PostgreSQL frozen",
}


def mail_window(first: float, second: float, faults: list[Fault], lease: float) -> str | None:
    """Return the documented reason a Message-ID received at ``first`` came again at ``second``:
    a mailer killed, or PostgreSQL away from the mailer (POSTGRES_AWAY: from the fault's start to
    its end, injection and ``lasts`` included) at some moment within the lease after the first
    copy; else None."""
    for fault in faults:
        if fault.kind == KILL and fault.target.startswith("mailer") and first - 1 <= fault.at <= second:
            return f"mailer killed at {fault.at:.1f}s"
        ends = fault.at + fault.took + fault.lasts
        if fault.kind in POSTGRES_AWAY and fault.at <= first + lease and ends >= first - 1:
            return f"{POSTGRES_AWAY[fault.kind]} at {fault.at:.1f}-{ends:.1f}s"
    return None


def check_ledger(shoppers: ShopperLedger, sink: Sink, chaos: Chaos, jobs: dict, lease: float) -> Ledger:
    """Check the invariants of the module docstring against the database, the sink and RQ's failed
    ``jobs`` (failed_jobs); ``lease`` is MAILER_LEASE_SECONDS."""
    from mailer.models import OutboxMessage, OutboxStatus
    from orders.models import Charge, Order, SandboxCharge

    ledger = Ledger(violations=list(shoppers.violations))
    bad = ledger.violations.append
    orders = {str(order.pk): order for order in Order.objects.all()}
    by_key = {str(order.idempotency_key): order for order in orders.values()}
    charges = collections.defaultdict(list)
    for charge in SandboxCharge.objects.all():
        charges[charge.idempotency_key].append(charge)
    shop_charges = {charge.order_id: charge for charge in Charge.objects.all()}
    outbox = {message.key: message for message in OutboxMessage.objects.all()}
    receipts = collections.defaultdict(list)
    for receipt in sink.received():
        receipts[receipt.message_id].append(receipt.at)

    with shoppers.lock:
        checkouts = list(shoppers.checkouts.values())
    accepted = [checkout for checkout in checkouts if checkout.outcome == "accepted"]
    for checkout in accepted:
        if checkout.order_id not in orders:
            bad(f"order {checkout.order_id} accepted (303) but not in the database: lost")
        elif str(orders[checkout.order_id].idempotency_key) != checkout.token:
            bad(f"order {checkout.order_id} accepted for checkout {checkout.token} but made by another checkout")
    submitted = {checkout.token: checkout for checkout in checkouts}
    for key, order in by_key.items():
        checkout = submitted.get(key)
        if checkout is None:
            bad(f"order {order.pk} exists but no shopper submitted its checkout {key}")
        elif checkout.outcome in ("refused", "conflict"):
            bad(f"order {order.pk} exists but its shopper was told {checkout.outcome}: {checkout.detail}")

    statuses = collections.Counter(order.status for order in orders.values())
    reasons = collections.Counter(order.failure_reason for order in orders.values() if order.status == "failed")
    message_ids = set()
    for order in orders.values():
        checkout = submitted.get(str(order.idempotency_key))
        if order.status == "pending":
            bad(f"order {order.pk} still pending")
        elif order.status == "failed" and not order.failure_reason:
            bad(f"order {order.pk} failed without a reason")
        elif order.status == "failed" and checkout and checkout.payment_method == "pm_card_visa":
            bad(f"order {order.pk} paid with a card that succeeds, but failed: {order.failure_reason}")
        ledger_rows = charges.get(str(order.idempotency_key), [])
        outcomes = sorted(charge.outcome for charge in ledger_rows)
        if order.status == "paid":
            if outcomes != ["succeeded"]:
                bad(f"order {order.pk} paid with gateway charges {outcomes or 'none'} (expected exactly one)")
            elif order.pk not in shop_charges or shop_charges[order.pk].gateway_charge_id != ledger_rows[0].charge_id:
                bad(f"order {order.pk} paid but its Charge does not match the gateway's {ledger_rows[0].charge_id}")
        elif order.status == "failed" and "succeeded" in outcomes:
            bad(f"order {order.pk} failed but the gateway took its money: {outcomes}")
        if order.status == "pending":
            continue
        message = outbox.get(order.confirmation_key)
        if message is None or message.status != OutboxStatus.SENT:
            bad(f"order {order.pk}: its email {order.confirmation_key} is {message.status if message else 'missing'}")
            continue
        message_ids.add(message.message_id)
        times = sorted(receipts.get(message.message_id, []))
        if not times:
            bad(f"order {order.pk}: its email {message.message_id} was never received by the SMTP server")
        for earlier, later in itertools.pairwise(times):
            why = mail_window(earlier, later, chaos.faults, lease)
            line = f"order {order.pk}: {message.message_id} received at {earlier:.1f}s and again at {later:.1f}s"
            if why:
                ledger.duplicates.append(f"{line} ({why})")
            else:
                bad(f"{line}, outside the documented window")
    for key, rows in charges.items():
        if key not in by_key:
            bad(f"gateway charges {[row.charge_id for row in rows]} for idempotency key {key}: no such order")
    for message_id in set(receipts) - message_ids:
        bad(f"received {message_id} ({len(receipts[message_id])}×), which is no order's email")
    for message in outbox.values():
        if message.status == OutboxStatus.FAILED:
            bad(f"outbox message {message.key} failed: {message.last_error[:200]}")

    for entries in jobs.values():
        for job_id, error in entries:
            if job_id.startswith("order-process-"):
                order = orders.get(str(uuid.UUID(job_id.removeprefix("order-process-"))))
                if order is None or order.status == "pending":
                    bad(f"failed job {job_id} ({error}) left its order {'missing' if order is None else 'pending'}")

    with shoppers.lock:
        outcomes = collections.Counter(checkout.outcome for checkout in shoppers.checkouts.values())
        requests = shoppers.requests
        errors = dict(shoppers.errors)
    ledger.figures = {
        "checkouts": dict(outcomes),
        "orders": len(orders),
        "orders by status": dict(statuses),
        "failure reasons": dict(reasons),
        "gateway charges": sum(len(rows) for rows in charges.values()),
        "emails received": sum(len(times) for times in receipts.values()),
        "distinct Message-IDs received": len(receipts),
        "failed jobs": {queue: len(entries) for queue, entries in jobs.items()},
        "failed job errors": dict(collections.Counter(error for entries in jobs.values() for _, error in entries)),
        "requests": requests,
        "request errors": {f"{step}: {error}": count for (step, error), count in sorted(errors.items())},
    }
    refused = collections.Counter(checkout.detail for checkout in checkouts if checkout.outcome == "refused")
    ledger.figures["refusals"] = dict(refused)
    return ledger


# --- Running it ---------------------------------------------------------------------------------


def formation_env(urls: dict[str, str], port: int, static_root: Path, default_timings: bool) -> dict[str, str]:
    """Return the environment of the formation's processes: the soak's servers, its own port."""
    env = {key: value for key, value in os.environ.items() if key not in ("DEBUG", "LOG_FORMAT")}
    env.update(urls)
    env.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        PORT=str(port),
        SITE_URL=f"http://127.0.0.1:{port}",
        STATIC_ROOT=str(static_root),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        LOG_FORMAT="text",
    )
    if not default_timings:
        env.update(SOAK_TIMINGS)
    return env


def parse_formation(text: str) -> dict[str, int]:
    """Parse ``web=1,worker=2`` into counts per type; raise argparse.ArgumentTypeError naming a bad item."""
    counts = dict(FORMATION)
    for item in filter(None, text.split(",")):
        kind, _, number = item.partition("=")
        if kind not in FORMATION or not number.isdigit() or int(number) < 1:
            raise argparse.ArgumentTypeError(
                f"--formation: {item!r} is not TYPE=N with TYPE one of {sorted(FORMATION)}"
            )
        counts[kind] = int(number)
    return counts


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def print_ledger(ledger: Ledger, chaos: Chaos, supervisor: Supervisor, run: dict) -> None:
    table = Table(title=f"soak ledger (seed {run['seed']})", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    faults = chaos.counts()
    table.add_row("faults injected", f"{len(chaos.faults)}: " + ", ".join(f"{k} {v}" for k, v in faults.items()))
    targets = collections.Counter(
        f"{fault.kind} {'work horse' if 'work horse' in fault.target else fault.target.split('.')[0]}"
        for fault in chaos.faults
        if fault.kind in (KILL, TERM)
    )
    table.add_row("processes hit", ", ".join(f"{k} {v}" for k, v in sorted(targets.items())) or "none")
    table.add_row("restarts", ", ".join(f"{k} {v}" for k, v in sorted(supervisor.restarts.items())) or "none")
    for name, value in ledger.figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        table.add_row(name, str(value))
    table.add_row("duplicate emails in the window", str(len(ledger.duplicates)))
    table.add_row("time to settle", run["settle"])
    table.add_row("logs", run["logs"])
    console.print(table)
    for line in ledger.duplicates:
        console.print(f"  duplicate (documented): {line}")
    for line in supervisor.findings + chaos.errors:
        console.print(f"  [yellow]finding:[/] {line}")
    for line in ledger.violations:
        console.print(f"  [bold red]VIOLATION:[/] {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=positive, default=120.0, help="seconds of shopping under chaos (120)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the chaos (random when not given; printed)")
    parser.add_argument("--shoppers", type=int, default=4, help="concurrent shoppers (4)")
    parser.add_argument("--gap", type=positive, default=5.0, help="mean seconds between faults (5)")
    parser.add_argument("--settle", type=positive, default=180.0, help="most seconds to wait for settlement (180)")
    parser.add_argument("--formation", type=parse_formation, default=dict(FORMATION), help="e.g. web=1,worker=2")
    parser.add_argument("--default-timings", action="store_true", help="keep the shop's recovery timings")
    parser.add_argument("--report", type=Path, help="also write the ledger as JSON to this file")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    clock = Clock()
    RUNS.mkdir(parents=True, exist_ok=True)
    root = Path(os.path.realpath(RUNS)) / f"seed{seed}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    logs = root / "logs"
    logs.mkdir(parents=True)
    console.print(
        f"soak: seed {seed}, {args.seconds:g}s, replay with: make soak SOAK_SECONDS={args.seconds:g} SOAK_SEED={seed}"
    )

    services = Services(root, clock)
    supervisor: Supervisor | None = None
    stop_shopping, stop_chaos = threading.Event(), threading.Event()
    try:
        from_template = services.start()
        os.environ.update(services.urls)
        port = free_port()
        env = formation_env(services.urls, port, RUNS / "static", args.default_timings)
        os.environ.setdefault("SECRET_KEY", env["SECRET_KEY"])
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        commands = process_commands()
        console.log(f"servers up in {clock.now():.1f}s")
        # collectstatic (web refuses to start without the manifest) while the release phase runs.
        collect = subprocess.Popen(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        release = subprocess.run(
            ["/bin/sh", "-c", commands["release"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        collected = collect.communicate(timeout=300)[0]
        for what, code, output in (
            ("release phase", release.returncode, release.stdout + release.stderr),
            ("collectstatic", collect.returncode, collected),
        ):
            if code:
                console.print(f"soak: the {what} failed ({code}):\n{output}")
                return 2
        if not from_template:
            services.save_template()
        console.log(f"release phase and collectstatic done at {clock.now():.1f}s")
        import django

        django.setup()
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's line per SMTP command
        from orders.models import Product

        # Enough stock that no checkout is refused as sold out: refusals are not what is soaked.
        Product.objects.filter(is_active=True).update(stock=1_000_000)
        skus = list(Product.objects.filter(is_active=True, currency="EUR").values_list("sku", flat=True))

        linked = services.linked_database_url()
        linked_env = {**env, "DATABASE_URL": linked} if linked else env
        slots = [
            Slot(kind, index + 1, commands[kind], linked_env if kind in FROZEN_TYPES else env, logs)
            for kind, count in args.formation.items()
            for index in range(count)
        ]
        supervisor = Supervisor(slots, clock)
        supervisor.start()
        began = time.monotonic()
        while not supervisor.all_ready():
            if time.monotonic() - began > READY_DEADLINE:
                console.print("soak: the formation did not become ready:\n" + "\n".join(supervisor.findings))
                return 2
            time.sleep(0.2)
        console.log(f"formation ready in {time.monotonic() - began:.1f}s: " + ", ".join(s.name for s in slots))

        ledger_in = ShopperLedger()
        base = f"http://127.0.0.1:{port}"
        shoppers = [Shopper(n + 1, base, skus, ledger_in, stop_shopping, seed) for n in range(args.shoppers)]
        chaos = Chaos(seed, args.gap, args.seconds, services, supervisor, clock, stop_chaos)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        ) as progress:
            task = progress.add_task("shopping under chaos", total=args.seconds, info="")
            for shopper in shoppers:
                shopper.start()
            chaos.began = clock.now()
            chaos.start()
            soak_began = time.monotonic()
            while (elapsed := time.monotonic() - soak_began) < args.seconds:
                info = f"{ledger_in.accepted()} orders accepted, {len(chaos.faults)} faults"
                progress.update(task, completed=elapsed, info=info)
                time.sleep(0.5)
            progress.update(task, completed=args.seconds)
            stop_chaos.set()
            chaos.join(timeout=90)
            stop_shopping.set()
            for shopper in shoppers:
                shopper.join(timeout=CHECKOUT_PATIENCE + 15)
            chaos_ended = time.monotonic()

            settle = progress.add_task("settling", total=None, info="")
            settled_after = None
            while time.monotonic() - chaos_ended < args.settle:
                if supervisor.all_ready():
                    waiting = database_retry(lambda: unsettled(services.sink))
                    progress.update(settle, info=f"{len(waiting)} orders unsettled")
                    if not waiting:
                        settled_after = time.monotonic() - chaos_ended
                        break
                else:
                    progress.update(settle, info="waiting for every process to be ready")
                time.sleep(1)
            progress.update(settle, total=1, completed=1)

        lease = float(env.get("MAILER_LEASE_SECONDS", 60))
        failed = failed_jobs(services.urls["REDIS_URL"])
        ledger = database_retry(lambda: check_ledger(ledger_in, services.sink, chaos, failed, lease))
        if not supervisor.all_ready():
            for slot in supervisor.slots:
                if not (slot.alive() and slot.is_ready()):
                    ledger.violations.append(f"{slot.name} is not running and ready at the end:\n{slot.tail()}")
        if settled_after is None:
            ledger.violations.append(f"not settled within {args.settle:g}s of the end of the chaos")
        settle_text = f"{settled_after:.1f}s" if settled_after is not None else f"not within {args.settle:g}s"
        run = {"seed": seed, "seconds": args.seconds, "settle": settle_text, "logs": str(logs)}
        print_ledger(ledger, chaos, supervisor, run)
        counts = chaos.counts()
        if args.report:
            args.report.write_text(
                json.dumps(
                    {
                        **run,
                        "settled_after": settled_after,
                        "faults": counts,
                        "fault_log": [fault.__dict__ for fault in chaos.faults],
                        "figures": ledger.figures,
                        "duplicates": ledger.duplicates,
                        "findings": supervisor.findings + chaos.errors,
                        "violations": ledger.violations,
                        "failed_jobs": failed,
                    },
                    indent=2,
                )
            )
        orders = ledger.figures["orders by status"]
        verdict = "FAIL" if ledger.violations else "PASS"
        console.print(
            f"soak {verdict}: seed {seed}, {args.seconds:g}s, {len(chaos.faults)} faults "
            f"({', '.join(f'{k} {v}' for k, v in counts.items())}), {ledger.figures['orders']} orders "
            f"({orders.get('paid', 0)} paid, {orders.get('failed', 0)} failed, {orders.get('pending', 0)} pending), "
            f"settled in {settle_text}, {len(ledger.violations)} violations"
        )
        return 1 if ledger.violations else 0
    finally:
        stop_chaos.set()
        stop_shopping.set()
        if supervisor is not None:
            supervisor.close()
        services.close()
        for data in ("postgres", "redis", "smtp"):
            shutil.rmtree(root / data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
