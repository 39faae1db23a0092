"""Operating a running ``make run`` as on a platform, under a stream of orders: ``make scale``
changes one type and leaves the others alone, scaling down lets each surplus worker finish its
job, a worker that exits is started again while the shop serves, ``make restart web`` fails no
request, a second ``make run`` is refused at once, every process links to the same SITE_URL and
serves metrics on a port of its own, and an idle formation logs nothing.

One formation (the runner, ``python -m embedded run``, on this module's Redis and SMTP and the
test database) serves every test of the module; each test places its own orders and checks that
each was paid once, its confirmation sent once with the shop's link, and no shopper request failed.
Run with ``-s`` to see the scale-up and scale-down figures.
"""

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from django.db.models import Count

from embedded.control import LOG_DIR
from embedded.harness import FAST, process_env
from embedded.polling import wait_until
from embedded.servers import free_port, port_free
from embedded.shopper import ShopperStream
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Charge, Order, OrderStatus, SandboxCharge
from processes.procfile import READY_LINES, web_healthy
from tests import factories
from tests.fixtures.formation import RedisServer
from tests.process.support import STOP_WITHIN, Launched, stop_and_check
from tests.support.databases import ALL_DATABASES
from tests.support.smtp import start_smtp

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

ROOT = Path(__file__).resolve().parents[2]
METRICS_TOKEN = "live-scale-metrics-token"
# Milliseconds each payment takes in the sandbox: long enough that a worker told to stop is in
# the middle of a job, short enough that the tests stay quick (a backlog's deadline counts it).
PAYMENT_LATENCY_MS = 400
# A line of ``make ps``: process, pid (or -), state, uptime, RSS, restarts.
PS_LINE = re.compile(
    r"^(?P<name>[a-z_-]+\.\d+)\s+(?P<pid>\d+|-)\s+(?P<state>\S+)\s+\S+\s+(?:-|\d+ MiB)\s+(?P<restarts>\d+|-)$"
)


class Live:
    """The module's running formation and the operator's commands on it."""

    def __init__(self, runner: Launched, env: dict[str, str], smtp):
        self.runner, self.env, self.smtp = runner, env, smtp
        self.url = f"http://127.0.0.1:{env['PORT']}"
        # A make of its own, as from a shell: not a sub-make of `make test`.
        self.make_env = {key: value for key, value in env.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def make(self, *words: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``make WORDS…`` in the checkout; return it finished (failing the test on a timeout)."""
        return subprocess.run(
            ["make", "--no-print-directory", *words],
            cwd=ROOT,
            env=self.make_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ps(self) -> dict[str, dict]:
        """Return ``make ps``'s rows by process name ("worker.2"): pid (int or None), state, restarts."""
        result = self.make("ps")
        assert result.returncode == 0, result.stdout + result.stderr
        rows = {}
        for line in result.stdout.splitlines():
            if match := PS_LINE.match(line.strip()):
                pid = int(match["pid"]) if match["pid"] != "-" else None
                rows[match["name"]] = {"pid": pid, "state": match["state"], "restarts": match["restarts"]}
        assert rows, result.stdout
        return rows

    def workers(self) -> list[str]:
        return [name for name in self.ps() if name.startswith("worker.")]

    def log(self, kind: str) -> str:
        return (LOG_DIR / f"{kind}.log").read_text(errors="replace")

    def log_size(self, kind: str) -> int:
        return (LOG_DIR / f"{kind}.log").stat().st_size

    def log_since(self, kind: str, offset: int) -> str:
        with (LOG_DIR / f"{kind}.log").open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def wait_ready(self, kind: str, names: list[str], offset: int, deadline: float = 30) -> None:
        """Wait until each process of ``names`` has logged its ready line since ``offset``."""

        def ready():
            text = self.log_since(kind, offset)
            return all(re.search(rf"^\S+ {re.escape(name)} +\| .*{READY_LINES[kind]}", text, re.M) for name in names)

        wait_until(ready, deadline=deadline, interval=0.1, message=f"{', '.join(names)} to be ready")

    def scale_workers(self, count: int) -> None:
        """Scale the workers to ``count`` and wait until each is ready (a precondition of a test)."""
        offset = self.log_size("worker")
        current = self.workers()
        assert self.make("scale", f"worker={count}").returncode == 0
        wanted = [f"worker.{n}" for n in range(1, count + 1)]
        wait_until(lambda: self.workers() == wanted, deadline=STOP_WITHIN, interval=0.3, message=f"{wanted}")
        self.wait_ready("worker", [name for name in wanted if name not in current], offset)

    @contextlib.contextmanager
    def shopping(self, shoppers: int = 2, pause: float = 0.3):
        """Shoppers place orders for the block; then check every order (assert_ledger)."""
        stream = ShopperStream(self.url, shoppers=shoppers, pause=pause).start()
        try:
            yield stream
        finally:
            stream.stop()
        self.assert_ledger(stream)

    def assert_ledger(self, stream: ShopperStream) -> None:
        """No shopper request failed; every order placed is paid, charged once, and confirmed by
        one email that links to the shop's own address."""
        assert not stream.failures, stream.failures
        ids = stream.orders
        assert ids, "no order was placed"
        paid = Order.objects.filter(pk__in=ids, status=OrderStatus.PAID)
        # A backlog drains at each worker's pace, not in a fixed time: a job holds its worker for
        # the sandbox's latency plus ~0.1 s of its own and fork (worker.log: 0.45-0.5 s a job,
        # ~1.8 jobs/s), and three shoppers with no pause leave 120-170 orders for one worker.
        backlog = len(ids) - paid.count()
        per_job = PAYMENT_LATENCY_MS / 1000 + 0.6
        deadline = 30 + backlog * per_job / len(self.workers())
        wait_until(lambda: paid.count() == len(ids), deadline=deadline, interval=0.5, message=f"{len(ids)} orders paid")
        keys = [str(key) for key in Order.objects.filter(pk__in=ids).values_list("idempotency_key", flat=True)]
        assert SandboxCharge.objects.filter(idempotency_key__in=keys).count() == len(ids)
        assert Charge.objects.filter(order_id__in=ids).count() == len(ids)
        sent = OutboxMessage.objects.filter(status=OutboxStatus.SENT)
        wait_until(lambda: sent.count() >= len(ids), deadline=60, interval=0.5, message=f"{len(ids)} emails sent")
        assert not sent.values("key").annotate(n=Count("id")).filter(n__gt=1).exists()
        bodies = [message.get_body(("plain",)).get_content() for message in list(self.smtp.messages)]
        for order_id in ids:
            links = [body for body in bodies if f"/orders/{order_id}/" in body]
            assert len(links) == 1, f"{order_id}: {len(links)} emails"
            assert f"{self.url}/orders/{order_id}/" in links[0], links[0]


def metrics_base() -> int:
    """Return a METRICS_PORT whose every derived port (+100… per type, see the metrics test) is
    free now and lies below the kernel's ephemeral range: a port from ``free_port()`` is inside
    it, and a client socket of this machine could take worker.2's +101 before worker.2 binds."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    offsets = (0, 100, 101, 102, 103, 200, 300)
    for base in random.sample(range(10_000, low - max(offsets)), 200):
        if all(port_free(base + offset) for offset in offsets):
            return base
    raise RuntimeError(f"no free block of metrics ports below {low}")


@pytest.fixture(scope="module")
def live(django_db_setup, tmp_path_factory):
    """The formation under ``make run``'s runner, started once for the module and stopped
    gracefully after it (exit 0, every process gone)."""
    redis = RedisServer(tmp_path_factory.mktemp("live-redis"))
    redis.start()
    smtp, smtp_server = start_smtp()
    env = process_env(
        **FAST,
        REDIS_URL=redis.url,
        EMAIL_URL=smtp.url,
        PORT=str(free_port()),
        FORMATION_KILL_WAIT="30",
        PAYMENT_SANDBOX_LATENCY_MS=str(PAYMENT_LATENCY_MS),
        METRICS_PORT=str(metrics_base()),
        METRICS_ADDR="127.0.0.1",
        METRICS_TOKEN=METRICS_TOKEN,
    )
    env.pop("SITE_URL", None)
    env_file = ROOT / ".env"
    saved = env_file.read_bytes() if env_file.exists() else None
    runner = Launched([sys.executable, "-m", "embedded", "run"], env)
    try:
        runner.wait_until_up()
        yield Live(runner, env, smtp)
        assert stop_and_check(runner, signal.SIGTERM) == 0, runner.output()
    finally:
        runner.close()
        os.unlink(runner.log.name)
        smtp_server.stop()
        redis.stop()
        if saved is None:
            env_file.unlink(missing_ok=True)
        else:
            env_file.write_bytes(saved)


@pytest.fixture
def shop(live):
    """The shop's product, stocked for every order a test places (the database is emptied after each test)."""
    factories.product(stock=100_000)
    return live


def test_make_scale_adds_workers_and_leaves_the_other_types_alone(shop, capsys):
    shop.scale_workers(1)
    before = shop.ps()
    with shop.shopping() as stream:
        time.sleep(1)
        offset, placed, began = shop.log_size("worker"), stream.placed(), time.monotonic()
        result = shop.make("scale", "worker=3")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "worker: 1 → 3" in result.stdout
        shop.wait_ready("worker", ["worker.2", "worker.3"], offset)
        up, during = time.monotonic() - began, stream.placed() - placed
        after = shop.ps()
        assert [name for name in after if name.startswith("worker.")] == ["worker.1", "worker.2", "worker.3"]
        assert all(after[name]["state"] == "up" for name in after)
        for name in ("web.1", "worker.1", "scheduler.1", "mailer.1"):
            assert after[name]["pid"] == before[name]["pid"], name
        time.sleep(2)  # orders for the three workers
    with capsys.disabled():
        print(f"\nscale-up worker 1 → 3: {up:.2f}s until both new workers listen; {during} orders placed meanwhile")


def test_make_scale_down_stops_the_surplus_after_their_job(shop, capsys):
    shop.scale_workers(3)
    before = shop.ps()
    with shop.shopping(shoppers=3, pause=0) as stream:
        time.sleep(3)  # a backlog: every worker is in a job
        offset, placed, began = shop.log_size("worker"), stream.placed(), time.monotonic()
        result = shop.make("scale", "worker=1")
        took = time.monotonic() - began
        assert result.returncode == 0 and took < 5, (took, result.stdout, result.stderr)
        wait_until(lambda: shop.workers() == ["worker.1"], deadline=STOP_WITHIN, interval=0.1, message="one worker")
        down, during = time.monotonic() - began, stream.placed() - placed
        after = shop.ps()
        assert after["worker.1"]["pid"] == before["worker.1"]["pid"]
        assert after["web.1"]["pid"] == before["web.1"]["pid"]
    text = shop.log_since("worker", offset)
    finished = 0
    for name in ("worker.2", "worker.3"):
        assert f"{name} stopped (rc=0)" in text, text
        own = "\n".join(line for line in text.splitlines() if re.match(rf"^\S+ {re.escape(name)} +\|", line))
        # RQ says "warm shut down requested" when the SIGTERM finds it in a job; a worker that was
        # between two jobs at that instant only says it is "stopping on request".
        marker = next((m for m in ("warm shut down requested", "stopping on request") if m in own), None)
        assert marker, own
        after_request = own.split(marker, 1)[1]
        finished += "Successfully completed orders.jobs.process_order" in after_request
        assert "cold shut down" not in own.lower(), own
    assert finished, f"neither stopped worker was in a job when asked to stop:\n{text}"
    with capsys.disabled():
        print(f"\nscale-down worker 3 → 1: {down:.2f}s until both surplus workers exited ({finished} finished a job); ")
        print(f"{during} orders placed meanwhile")


def test_a_worker_that_exits_is_started_again_while_the_shop_serves(shop):
    shop.scale_workers(2)
    before = shop.ps()
    with shop.shopping():
        time.sleep(1)
        offset = shop.log_size("worker")
        os.kill(before["worker.1"]["pid"], signal.SIGTERM)

        def replaced():
            row = shop.ps().get("worker.1")
            return row and row["pid"] not in (None, before["worker.1"]["pid"]) and row["state"] == "up" and row

        row = wait_until(replaced, deadline=STOP_WITHIN, interval=0.2, message="worker.1 started again")
        shop.wait_ready("worker", ["worker.1"], offset)
        assert row["restarts"] == str(int(before["worker.1"]["restarts"]) + 1)
        assert shop.ps()["web.1"]["pid"] == before["web.1"]["pid"]
        time.sleep(1)  # orders for the new worker
    assert re.search(
        r"worker\.1 exited \(rc=0\) after [\d.]+s; starting it again in 1s", shop.log_since("worker", offset)
    )


def test_make_restart_web_fails_no_request(shop):
    web = shop.ps()["web.1"]["pid"]
    old_workers = {process.pid for process in psutil.Process(web).children()}
    with shop.shopping(pause=0.1):
        time.sleep(1)
        result = shop.make("restart", "web")
        assert result.returncode == 0, result.stdout + result.stderr

        def renewed():
            workers = {process.pid for process in psutil.Process(web).children()}
            return workers and not workers & old_workers

        wait_until(renewed, deadline=STOP_WITHIN, interval=0.2, message="gunicorn's new workers")
        time.sleep(1)
    assert shop.ps()["web.1"]["pid"] == web


def test_a_second_make_run_is_refused_at_once_and_the_first_serves_on(shop):
    before = shop.ps()
    runner = shop.runner.runner().pid
    with shop.shopping():
        began = time.monotonic()
        result = shop.make("run", timeout=60)
        took = time.monotonic() - began
        assert result.returncode != 0, result.stdout + result.stderr
        assert took < 10, took
        refusal = [line for line in result.stderr.splitlines() if line.startswith("formation:")]
        assert refusal == [
            f"formation: already running (pid {runner}, {shop.url}/): scale it with `make scale worker=2`, "
            f"see it with `make ps`, stop it with `kill {runner}`"
        ], result.stderr
        assert "release phase" not in result.stdout + result.stderr
        time.sleep(1)
    assert {name: row["pid"] for name, row in shop.ps().items()} == {name: row["pid"] for name, row in before.items()}
    assert web_healthy(shop.env["PORT"])


def test_each_process_is_named_and_serves_its_metrics_on_a_port_of_its_own(shop):
    shop.scale_workers(2)
    for name, row in shop.ps().items():  # DYNO names its database connections
        assert psutil.Process(row["pid"]).environ()["DYNO"] == name
    base = int(shop.env["METRICS_PORT"])
    # METRICS_PORT + 100 × the type's place among the long-running types + its number − 1.
    ports = {"worker.1": base + 100, "worker.2": base + 101, "scheduler.1": base + 200, "mailer.1": base + 300}
    for name, port in ports.items():
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )

        def scraped(request=request):
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    return response.read().decode()
            except OSError:
                return None

        page = wait_until(scraped, deadline=15, interval=0.2, message=f"{name}'s metrics on {port}")
        assert f'process_type="{name.partition(".")[0]}"' in page, name


def test_an_idle_formation_logs_nothing(shop):
    with shop.shopping():
        time.sleep(1)
    offset = {kind: shop.log_size(kind) for kind in ("worker", "scheduler", "mailer")}
    time.sleep(4)  # two runs of each periodic job at least (ORDER_SWEEP_INTERVAL=1)
    lines = {kind: shop.log_since(kind, start).splitlines() for kind, start in offset.items()}
    assert lines == {"worker": [], "scheduler": [], "mailer": []}
