"""Two versions at once, as every rollout has them: version A's processes keep serving shoppers while
version B's release phase migrates the same database, and B contracts the schema only once A is gone.

Version A is the shop's processes started from the Procfile with RELEASE_VERSION=A (project.settings).
Version B is the same code plus tests/version_b_app (tests.settings_version_b, RELEASE_VERSION=B):
an expand migration on orders_order, a hold that keeps B's release running while A's shoppers
check out, and a contract migration marked ``contract = True``. Version B' (tests.settings_version_b_unmarked)
has an expand migration and then a contract step left unmarked. The rule they check is in
processes/stages.py (expand and contract) and processes/management/commands/migrate.py (the release
phase and the post-deploy step).
"""

import http.client
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest
from django.db import connection

from embedded.harness import ROOT, Process, run_release
from embedded.polling import wait_until
from embedded.servers import free_port
from embedded.shopper import Browser, checkout_data, hidden, page_lines
from orders.models import Order
from tests import factories
from tests.process.support import assert_exactly_once
from tests.support.databases import ALL_DATABASES
from tests.support.metrics import sample, scrape

pytestmark = [
    pytest.mark.process,
    pytest.mark.release,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

VERSION_B = "tests.settings_version_b"
VERSION_B_UNMARKED = "tests.settings_version_b_unmarked"
# What tests/version_b_app's migrations may add to orders_order, and its label in django_migrations.
B_COLUMNS = ("gift_note", "channel", "coupon")
B_APP = "version_b_app"
POST_DEPLOY = "exec python manage.py migrate --contract --noinput"
METRICS_TOKEN = "two-versions-metrics-token-0123"
NETWORK_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Answer:
    """One request of a shopper: when it was answered (time.monotonic()), the step and the HTTP
    status (0 when no answer came: refused, reset or timed out)."""

    at: float
    step: str
    status: int


class Shoppers:
    """Shoppers of one web over HTTP, each a thread: the catalogue, *Add to cart*, the checkout page,
    the checkout, then ``/ready``, in a loop of at most ``most`` checkouts and ``seconds`` seconds
    each, or until ``stop``. Keeps every answer (``answers``), the order of each accepted checkout
    (``orders``) and any exception a shopper met (``errors``)."""

    def __init__(self, base: str, *, count: int = 2, most: int = 60, seconds: float = 60):
        self.base, self.most, self.seconds = base, most, seconds
        self.answers: list[Answer] = []
        self.orders: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._shop, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self) -> "Shoppers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the shoppers after their current request; wait for them (each request has a 10 s timeout)."""
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads), "a shopper did not stop"

    def checkouts(self, *, since: float = 0.0, accepted: bool = True) -> int:
        """Return how many checkouts were answered at or after ``since`` (time.monotonic()): accepted
        (303) ones only, or with ``accepted`` False every one, whatever its status."""
        with self.lock:
            return sum(
                1
                for answer in self.answers
                if answer.step == "checkout" and answer.at >= since and (answer.status == 303 or not accepted)
            )

    def wait_for_checkouts(self, count: int, *, since: float = 0.0, accepted: bool = True) -> None:
        """Wait (30 s at most) until ``count`` checkouts were answered at or after ``since`` (see
        checkouts), or every shopper has stopped by itself (its bounds: the caller asserts on what
        they saw)."""
        wait_until(
            lambda: (
                self.checkouts(since=since, accepted=accepted) >= count
                or not any(thread.is_alive() for thread in self.threads)
            ),
            deadline=30,
            message=f"{count} checkout(s) {'accepted' if accepted else 'answered'}",
        )

    def failures(self) -> list[Answer]:
        """Return the answers that were server errors (5xx) or no answer at all."""
        with self.lock:
            return [answer for answer in self.answers if answer.status >= 500 or answer.status == 0]

    def ready_statuses(self) -> set[int]:
        """Return the statuses that ``/ready`` answered (0: no answer)."""
        with self.lock:
            return {answer.status for answer in self.answers if answer.step == "ready"}

    def summary(self) -> str:
        with self.lock:
            checkouts = [answer.status for answer in self.answers if answer.step == "checkout"]
            ready = [answer.status for answer in self.answers if answer.step == "ready"]
        return (
            f"{len(checkouts)} checkouts ({sum(s >= 500 for s in checkouts)} answered 5xx), "
            f"/ready {sorted(set(ready))} in {len(ready)} polls"
        )

    def _shop(self, number: int) -> None:
        browser = Browser(self.base)
        end = time.monotonic() + self.seconds
        for _ in range(self.most):
            if self.halt.is_set() or time.monotonic() > end:
                return
            try:
                accepted = self._checkout(browser, email=f"shopper{number}@example.com")
                self._ask(browser, "ready", "/ready")
            except Exception as exc:  # an unexpected page: kept for the test, and the shopper goes on
                with self.lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                accepted = False
            if not accepted:
                self.halt.wait(0.2)

    def _ask(self, browser: Browser, step: str, path: str, data: dict | None = None) -> tuple[int, dict, str]:
        try:
            status, headers, body = browser.request(path, data)
        except NETWORK_ERRORS:
            status, headers, body = 0, {}, ""
        with self.lock:
            self.answers.append(Answer(time.monotonic(), step, status))
        return status, headers, body

    def _checkout(self, browser: Browser, *, email: str) -> bool:
        status, _, page = self._ask(browser, "catalogue", "/")
        if status != 200:
            return False
        add = {"product": "procfile-mug", "quantity": 1, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
        if self._ask(browser, "add to cart", "/cart/add/", add)[0] != 303:
            return False
        status, _, page = self._ask(browser, "checkout page", "/checkout/")
        if status != 200:
            return False
        form = {
            **checkout_data(token=hidden("token", page), email=email, lines=page_lines(page)),
            "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
        }
        status, headers, _ = self._ask(browser, "checkout", "/checkout/", form)
        if status != 303:
            return False
        order = re.fullmatch(r"/orders/([0-9a-f-]{36})/", headers["Location"])
        assert order, headers["Location"]
        with self.lock:
            self.orders.append(order.group(1))
        return True


def b_columns() -> dict[str, tuple[str, str | None]]:
    """Return the columns of B_COLUMNS that orders_order has: ``{name: (is_nullable, column_default)}``
    as information_schema.columns says."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_name = 'orders_order' AND column_name = ANY(%s)",
            [list(B_COLUMNS)],
        )
        return {name: (nullable, default) for name, nullable, default in cursor.fetchall()}


def b_applied() -> dict[str, object]:
    """Return the migrations of tests/version_b_app recorded as applied: ``{name: applied at}``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, applied FROM django_migrations WHERE app = %s", [B_APP])
        return dict(cursor.fetchall())


@pytest.fixture(autouse=True)
def version_b_schema_dropped(transactional_db):
    """Drop what version B adds (its columns on orders_order, its rows in django_migrations) before
    and after each test: the test database is shared with the tests that follow.

    Autouse, so it is set up before the formation and torn down after its processes are gone.
    """

    def drop():
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE orders_order " + ", ".join(f"DROP COLUMN IF EXISTS {name}" for name in B_COLUMNS)
            )
            cursor.execute("DELETE FROM django_migrations WHERE app = %s", [B_APP])
        assert (b_columns(), b_applied()) == ({}, {})

    drop()
    yield
    drop()


def version_a(formation, *kinds: str) -> dict[str, Process]:
    """Start version A's processes of ``kinds`` from the Procfile (RELEASE_VERSION=A, two web workers,
    the worker's metrics on a port of its own); return them once all are ready."""
    extra = {
        "web": {"WEB_CONCURRENCY": "2"},
        "worker": {"METRICS_TOKEN": METRICS_TOKEN, "METRICS_PORT": str(free_port()), "METRICS_ADDR": "127.0.0.1"},
    }
    processes = {kind: formation.start(kind, wait=False, RELEASE_VERSION="A", **extra.get(kind, {})) for kind in kinds}
    for process in processes.values():
        process.wait_ready(30)
    return processes


def version_b_env(formation, settings_module: str = VERSION_B, **extra: str) -> dict[str, str]:
    """Return the environment of version B's one-off processes (release, post-deploy)."""
    return {**formation.env, "DJANGO_SETTINGS_MODULE": settings_module, "RELEASE_VERSION": "B", **extra}


def post_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the post-deploy step (``manage.py migrate --contract``) to completion; return it."""
    return subprocess.run(
        ["/bin/sh", "-c", POST_DEPLOY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def worker_jobs(worker: Process) -> dict[str, float]:
    """Return the worker's job counters of the default queue (started, finished, failed) from its metrics."""
    status, _, samples = scrape(f"http://127.0.0.1:{worker.env['METRICS_PORT']}/metrics", token=METRICS_TOKEN)
    assert status == 200
    return {
        outcome: sample(samples, f"formation_worker_jobs_{outcome}_total", queue="default")
        for outcome in ("started", "finished", "failed")
    }


def test_version_a_serves_every_checkout_while_version_b_releases_an_expand_migration(formation, smtp):
    factories.product(stock=10_000)
    worker = version_a(formation, "web", "worker", "mailer")["worker"]
    with Shoppers(f"http://127.0.0.1:{formation.env['PORT']}") as shoppers:
        shoppers.wait_for_checkouts(2)
        # B's hold keeps its release running until A has placed 2 orders against the expanded schema.
        release = run_release(version_b_env(formation, VERSION_B_HOLD_ORDERS="2", VERSION_B_HOLD_SECONDS="20"))
        # And after it: 2 more checkouts, whatever A answers (the assertions below say what it should).
        released = time.monotonic()
        shoppers.wait_for_checkouts(2, since=released, accepted=False)
    print(release.stdout, release.stderr, shoppers.summary(), sep="\n")

    assert shoppers.errors == []
    assert shoppers.failures() == [], shoppers.summary()
    assert shoppers.ready_statuses() == {200}, shoppers.summary()
    assert release.returncode == 0, release.stderr
    assert "Applying version_b_app.0001_order_expand... OK" in release.stdout
    assert b_columns() == {"gift_note": ("YES", None), "channel": ("NO", "'web'::character varying")}
    applied = b_applied()
    assert set(applied) == {"0001_order_expand", "0002_hold"}
    during = Order.objects.filter(created_at__gt=applied["0001_order_expand"], created_at__lt=applied["0002_hold"])
    assert during.count() >= 2, "no checkout of A inserted an order into the expanded table while B's release ran"
    assert shoppers.checkouts(since=released) >= 2, "A took no checkout after B's release"

    orders = list(Order.objects.filter(pk__in=shoppers.orders))
    assert len(orders) == len(shoppers.orders) == len(set(shoppers.orders)) >= 4
    wait_until(
        lambda: not Order.objects.filter(pk__in=shoppers.orders).exclude(status="paid").exists(),
        deadline=60,
        message="every order of A to be paid",
    )
    assert_exactly_once(orders, smtp)
    wait_until(lambda: worker_jobs(worker)["finished"] >= len(orders), deadline=15, message="the jobs' metrics")
    # One job per order, each finished at its first attempt: no failure, no retry.
    assert worker_jobs(worker) == {"started": len(orders), "finished": len(orders), "failed": 0}


def test_version_b_contracts_the_schema_only_once_version_a_is_gone(formation):
    version_a_processes = version_a(formation, "web", "worker")
    env = version_b_env(formation)
    release = run_release(env)
    print(release.stdout, release.stderr, sep="\n")
    assert release.returncode == 0, release.stderr
    assert (
        "release: 1 migration(s) wait for the post-deploy step (manage.py migrate --contract), "
        "contract ones and those after them: "
        "version_b_app.0003_order_gift_note_required" in release.stdout
    )
    assert set(b_applied()) == {"0001_order_expand", "0002_hold"}
    assert b_columns()["gift_note"] == ("YES", None)

    refused = post_deploy(env)
    print(refused.stdout, refused.stderr, sep="\n")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    line = lines[0].removeprefix("CommandError: ")
    assert line.startswith("post-deploy: "), line
    assert re.match(r"post-deploy: (web|worker) of release A ", line), line
    assert "nothing was applied" in line
    assert set(b_applied()) == {"0001_order_expand", "0002_hold"}
    assert b_columns()["gift_note"] == ("YES", None)

    # The rollout replaces A: its processes stop gracefully, their sessions and RQ worker go.
    for process in version_a_processes.values():
        process.send_signal(signal.SIGTERM)
    assert [process.wait(deadline=30) for process in version_a_processes.values()] == [0, 0]
    wait_until(no_session_of_release_a, deadline=15, message="A's PostgreSQL sessions to end")

    applied = post_deploy(env)
    print(applied.stdout, applied.stderr, sep="\n")
    assert applied.returncode == 0, applied.stderr
    assert "Applying version_b_app.0003_order_gift_note_required... OK" in applied.stdout
    assert set(b_applied()) == {"0001_order_expand", "0002_hold", "0003_order_gift_note_required"}
    assert b_columns()["gift_note"] == ("NO", None)


def no_session_of_release_a() -> bool:
    """Return whether no PostgreSQL session names release A (``formation/<type>/A/<pid>@<host>``) any more."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'formation/%%/A/%%'")
        return cursor.fetchone()[0] == 0


def test_an_unmarked_contract_step_is_refused_and_version_a_keeps_serving(formation):
    factories.product(stock=10_000)
    version_a(formation, "web", "worker")
    with Shoppers(f"http://127.0.0.1:{formation.env['PORT']}") as shoppers:
        shoppers.wait_for_checkouts(1)
        release = run_release(version_b_env(formation, VERSION_B_UNMARKED))
        released = time.monotonic()
        shoppers.wait_for_checkouts(1, since=released, accepted=False)
    print(release.stdout, release.stderr, shoppers.summary(), sep="\n")

    assert shoppers.errors == []
    assert shoppers.failures() == [], shoppers.summary()
    assert shoppers.ready_statuses() == {200}, shoppers.summary()
    assert release.returncode != 0
    last = release.stderr.strip().splitlines()[-1]
    assert "release: version_b_app.0002_order_coupon: Add field coupon to order (NOT NULL constraint" in last, last
    assert "nothing was applied" in last
    # Nothing of B' applied: not its expand migration before the refused one either.
    assert (b_columns(), b_applied()) == ({}, {})
    assert shoppers.checkouts(since=released) >= 1, "A took no checkout after B's release"
    wait_until(
        lambda: not Order.objects.filter(pk__in=shoppers.orders).exclude(status="paid").exists(),
        deadline=60,
        message="every order of A to be paid",
    )


def test_the_post_deploy_step_sees_a_web_of_the_previous_release_that_holds_no_database_session(formation):
    # CONN_MAX_AGE=0 and no request served: A's web has no PostgreSQL session to be seen by; its
    # registration in Redis (core.releases) is what tells the post-deploy step that it still runs.
    web = formation.start("web", RELEASE_VERSION="A", CONN_MAX_AGE="0")
    wait_until(no_session_of_release_a, deadline=15, message="A's web to hold no PostgreSQL session")
    env = version_b_env(formation)
    assert run_release(env).returncode == 0

    refused = post_deploy(env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "post-deploy: web of release A " in refused.stderr
    assert "0003_order_gift_note_required" not in b_applied()

    web.send_signal(signal.SIGTERM)
    assert web.wait(deadline=30) == 0
    applied = post_deploy(env)
    assert applied.returncode == 0, applied.stderr
    assert "0003_order_gift_note_required" in b_applied()
