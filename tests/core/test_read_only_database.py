"""PostgreSQL that answers but refuses writes (a standby after failover, a provider's disk-full
mode setting default_transaction_read_only): pages answer 503 with Retry-After, /ready fails
naming it, and a checkout refused so is retried later into exactly one paid order.

Injected as production meets it: ``ALTER DATABASE … SET default_transaction_read_only = on``
and the app's sessions terminated, so that they reconnect read-only.
"""

import json
import logging

import pytest
from django.test import Client

from core import liveness
from embedded.shopper import cart_fill, checkout_data, hidden, page_lines
from orders.models import Order, OrderStatus
from tests.support.databases import ALL_DATABASES
from tests.support.queues import run_burst_worker

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def test_writes_refused_read_only_are_503_and_the_checkout_is_retried_into_one_paid_order(read_only, product):
    browser = Client(enforce_csrf_checks=True)
    cart_fill(browser)
    html = browser.get("/checkout/").content.decode()
    form = checkout_data(token=hidden("token", html), lines=page_lines(html))
    form["csrfmiddlewaretoken"] = hidden("csrfmiddlewaretoken", html)

    read_only(True)
    add = browser.post(
        "/cart/add/", {"product": "procfile-mug", "quantity": 1, "csrfmiddlewaretoken": form["csrfmiddlewaretoken"]}
    )
    assert add.status_code == 503
    assert add["Retry-After"] == "5"
    refused = browser.post("/checkout/", form)
    assert refused.status_code == 503
    assert refused["Retry-After"] == "5"
    ready = Client().get("/ready")
    assert ready.status_code == 503
    assert "read-only" in json.loads(ready.content)["checks"]["database"]
    assert "read-only" in liveness.database_problem()

    read_only(False)
    assert Client().get("/ready").status_code == 200
    assert liveness.database_problem() is None
    # The same POST (same checkout token, the idempotency key) as the shopper's retry.
    retried = browser.post("/checkout/", form)
    assert retried.status_code == 303, retried.content.decode()[:500]
    again = browser.post("/checkout/", form)
    assert again.status_code in (200, 303)
    run_burst_worker()
    assert list(Order.objects.values_list("status", flat=True)) == [OrderStatus.PAID]
    # The cart the refused add-to-cart would have changed is still there: one mug, as before.
    assert Order.objects.get().lines.get().quantity == 1


def test_a_refused_add_to_cart_is_one_log_line_without_a_traceback(read_only, product, caplog):
    browser = Client(enforce_csrf_checks=True)
    cart_fill(browser)
    token = hidden("csrfmiddlewaretoken", browser.get("/cart/").content.decode())
    read_only(True)
    caplog.clear()
    add = browser.post("/cart/add/", {"product": "procfile-mug", "quantity": 1, "csrfmiddlewaretoken": token})
    assert add.status_code == 503
    assert add["Retry-After"] == "5"
    assert add["Content-Type"].startswith("text/html")
    assert add["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in add["Content-Security-Policy"]
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.name == "core.middleware"
    assert line.getMessage().startswith("database unavailable (read-only) for POST /cart/add/: cannot execute "), (
        line.getMessage()
    )
    assert line.exc_info is None
    # A JSON client is told the cause in JSON.
    caplog.clear()
    api = browser.post(
        "/cart/add/",
        {"product": "procfile-mug", "quantity": 1, "csrfmiddlewaretoken": token},
        HTTP_ACCEPT="application/json",
    )
    assert api.status_code == 503
    assert json.loads(api.content) == {"error": "database unavailable", "cause": "read-only"}
