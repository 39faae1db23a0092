"""The shop's core flows with every process type behind a real PgBouncer in transaction mode
(stock configuration, embedded.servers.PgBouncer): DATABASE_URL is the pooler, DATABASE_DIRECT_URL
PostgreSQL itself, as in docker-compose.yml and the Kubernetes manifests.

Why the app must send no startup parameter: a stock PgBouncer refuses ``options``.
"""

import threading
import time

import psycopg
import pytest
from django.db import connection

from embedded.harness import formation_database_url, run_release
from embedded.polling import wait_until
from embedded.shopper import Browser, checkout_data, element, hidden
from orders.models import Charge, Order
from tests import factories
from tests.fixtures.pooling import database_url, pgbouncer_console
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

# Seconds a session holds orders_order at most while the shop is asked for an order page.
HOLD = 8
# Seconds a shop request may take behind it: DATABASE_STATEMENT_TIMEOUT (1 s) plus margin.
MOST_A_REQUEST_WAITS = 3


def pooled_transactions(pgbouncer_url: str) -> int:
    """Return how many transactions PgBouncer has carried for the test database (SHOW STATS)."""
    with psycopg.connect(database_url(pgbouncer_url, "pgbouncer"), autocommit=True) as console:
        cursor = console.execute("SHOW STATS")
        columns = [column.name for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return sum(row["total_xact_count"] for row in rows if row["database"] == connection.settings_dict["NAME"])


def test_a_stock_pgbouncer_refuses_the_options_startup_parameter(pgbouncer_url):
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(pgbouncer_url, options="-c statement_timeout=1000")
    with psycopg.connect(pgbouncer_url) as pooled:  # the same connection without it is served
        assert pooled.execute("SELECT current_database()").fetchone()[0] == connection.settings_dict["NAME"]


def test_an_order_placed_through_the_pooler_is_paid_and_confirmed(formation, pooled_env, pgbouncer_url, smtp):
    factories.product()
    release = run_release(pooled_env)
    assert release.returncode == 0, release.stdout + release.stderr
    before = pooled_transactions(pgbouncer_url)
    processes = {kind: formation.start(kind, wait=False) for kind in ("web", "worker", "scheduler", "mailer")}
    for process in processes.values():
        process.wait_ready(30)
    browser = Browser(f"http://127.0.0.1:{pooled_env['PORT']}")
    status, _, body = browser.request("/ready")
    assert status == 200, body

    browser.add_to_cart("procfile-mug", 2)
    status, _, page = browser.request("/checkout/")
    assert status == 200
    form = {
        **checkout_data(token=hidden("token", page), email="pooled@example.com", lines=(("procfile-mug", 2),)),
        "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
        "lines-INITIAL_FORMS": hidden("lines-INITIAL_FORMS", page),
    }
    status, headers, _ = browser.request("/checkout/", form)
    assert status == 303, status
    order_path = headers["Location"]

    wait_until(lambda: smtp.messages, deadline=30, message="the confirmation email at the SMTP server")
    order = Order.objects.get()
    assert order.status == "paid"
    assert Charge.objects.filter(order=order).count() == 1
    assert [message["To"] for message in smtp.messages] == ["pooled@example.com"]
    wait_until(
        lambda: element(browser.request(order_path)[2], "#order-confirmation").attrs["data-state"] == "sent",
        deadline=15,
        message="the order page to say the confirmation was sent",
    )
    # The processes' work went through PgBouncer, not around it.
    assert pooled_transactions(pgbouncer_url) > before


@pytest.fixture
def role_statement_timeout(pgbouncer_url):
    """Reset, after the test, the role's statement_timeout in the test database that a pooled
    release wrote, and have PgBouncer open fresh server connections, so later tests see the default."""
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            f'ALTER ROLE CURRENT_USER IN DATABASE "{connection.settings_dict["NAME"]}" RESET statement_timeout'
        )
    pgbouncer_console(pgbouncer_url, f"RECONNECT {connection.settings_dict['NAME']}")


def test_a_shop_statement_past_the_statement_timeout_answers_503_through_the_pooler(
    formation, pooled_env, pgbouncer_url, role_statement_timeout
):
    order = factories.order()
    # The release writes the role's statement_timeout (PgBouncer passes no `options` on); server
    # connections the pooler opened before keep the old one until they are replaced.
    release = run_release({**pooled_env, "DATABASE_STATEMENT_TIMEOUT": "1"})
    assert release.returncode == 0, release.stdout + release.stderr
    pgbouncer_console(pgbouncer_url, f"RECONNECT {connection.settings_dict['NAME']}")
    with psycopg.connect(pgbouncer_url) as pooled:
        assert pooled.execute("SHOW statement_timeout").fetchone()[0] == "1s"

    web = formation.start("web", DATABASE_STATEMENT_TIMEOUT="1")
    browser = Browser(f"http://127.0.0.1:{web.env['PORT']}")
    assert browser.request(f"/orders/{order.pk}/")[0] == 200
    # A session that takes the table outright (a manual ALTER, a VACUUM FULL) and keeps it HOLD s.
    locker = psycopg.connect(formation_database_url(), application_name="manual-alter")
    ends = threading.Timer(HOLD, locker.rollback)  # without a statement timeout, the page waits this out
    try:
        locker.execute("LOCK TABLE orders_order IN ACCESS EXCLUSIVE MODE")
        ends.start()
        started = time.monotonic()
        status, headers, _ = browser.request(f"/orders/{order.pk}/")
        seconds = time.monotonic() - started
    finally:
        ends.cancel()
        locker.close()
    print(f"order page behind an exclusive lock, through the pooler: {status} after {seconds:.2f} s")
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert seconds < MOST_A_REQUEST_WAITS
