"""End to end: the Procfile's own process types, as processes, against real PostgreSQL, Redis and SMTP.

A shopper's order goes through the HTML checkout over HTTP (CSRF and all), a worker processes it,
the scheduler runs, a mailer delivers the confirmation to an SMTP server.
"""

import signal
import time

import pytest

from embedded.harness import procfile, run_release
from embedded.polling import wait_until
from embedded.shopper import Browser, checkout_data, element, hidden
from orders.models import Charge, Order
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]


def test_procfile_declares_every_process_type_and_execs_it():
    processes = procfile()
    assert set(processes) == {"release", "web", "worker", "scheduler", "mailer"}
    assert all(command.startswith("exec ") for command in processes.values())
    assert "0.0.0.0:$PORT" in processes["web"]


def test_order_placed_over_http_is_paid_and_confirmed_by_smtp(formation, smtp):
    factories.product()
    release = run_release(formation.env)
    assert release.returncode == 0, release.stdout + release.stderr

    # All at once, as honcho starts them; then each must become ready.
    processes = {kind: formation.start(kind, wait=False) for kind in ("web", "worker", "scheduler", "mailer")}
    for process in processes.values():
        process.wait_ready(30)
    browser = Browser(f"http://127.0.0.1:{formation.env['PORT']}")

    # As a shopper: the catalogue's Add to cart (a POST form) twice, then the cart's Checkout.
    catalogue = browser.request("/")[2]
    add = {"product": "procfile-mug", "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", catalogue)}
    for _ in range(2):
        status, headers, _ = browser.request("/cart/add/", add)
        assert (status, headers["Location"]) == (303, "/cart/")
    assert element(browser.request("/cart/")[2], "#cart-quantity-procfile-mug").attrs["value"] == "2"
    status, _, page = browser.request("/checkout/")
    assert status == 200
    form = {
        **checkout_data(token=hidden("token", page), email="e2e@example.com", lines=(("procfile-mug", 2),)),
        "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
        "lines-INITIAL_FORMS": hidden("lines-INITIAL_FORMS", page),
    }
    placed = time.monotonic()
    status, headers, _ = browser.request("/checkout/", form)
    assert status == 303, status
    order_path = headers["Location"]
    # A double click: the same form again is the same order.
    assert browser.request("/checkout/", form)[1]["Location"] == order_path

    wait_until(lambda: smtp.messages, deadline=30, message="the confirmation email at the SMTP server")
    print(f"checkout to email: {time.monotonic() - placed:.2f}s")
    order = Order.objects.get()
    assert order.status == "paid"
    assert Charge.objects.filter(order=order).count() == 1
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["To"] == "e2e@example.com"
    assert str(order.pk) in smtp.messages[0].get_content()
    # The server's 250 comes a moment before the mailer records the message as sent.
    wait_until(
        lambda: element(browser.request(order_path)[2], "#order-confirmation").attrs["data-state"] == "sent",
        deadline=15,
        message="the order page to say the confirmation was sent",
    )
    order_page = browser.request(order_path)[2]
    assert element(order_page, "#order-status").text == "paid"
    assert element(order_page, "#order-confirmation").attrs["data-state"] == "sent"

    # Every long-running type stops gracefully on SIGTERM.
    for process in processes.values():
        process.send_signal(signal.SIGTERM)
    assert {kind: process.wait(deadline=60) for kind, process in processes.items()} == dict.fromkeys(processes, 0)
